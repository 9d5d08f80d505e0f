// Owns the worker thread. The GUI calls these methods on its own thread; every call becomes a
// queued call into the worker, and the worker's signals come back queued. stop() is the one direct
// call: it only raises the session's cancel flag.
#pragma once

#include <QObject>
#include <QThread>

#include "inference_worker.h"

namespace mlmamba::ui {

class InferenceController : public QObject {
  Q_OBJECT
 public:
  explicit InferenceController(QObject* parent = nullptr);
  ~InferenceController() override;  // stops any answer and joins the thread

  void loadModel(const QString& folder, const QString& device);
  quint64 ask(const QString& conversation, const QVector<Message>& history, const QString& text,
              const QString& image, const GenerationSettings& settings);
  quint64 askAboutFrame(const QImage& frame, const QString& question,
                        const GenerationSettings& settings);
  void forget(const QString& conversation);
  void stop(quint64 request);
  bool busy() const { return outstanding_ > 0; }
  bool modelReady() const { return ready_; }
  const ModelSummary& model() const { return summary_; }

 signals:
  void modelLoaded(const mlmamba::ui::ModelSummary& summary);
  void modelLoadFailed(const QString& folder, const QString& message);
  void tokens(quint64 request, const QString& text);
  void finished(quint64 request, const QString& text, const mlmamba::ui::AnswerStats& stats,
                bool stopped);
  void failed(quint64 request, const QString& message);
  void busyChanged(bool busy);

 private:
  void settle();
  QThread thread_;
  InferenceWorker* worker_;
  quint64 next_request_ = 1;
  quint64 last_request_ = 0;
  int outstanding_ = 0;
  bool ready_ = false;
  ModelSummary summary_;
};

}  // namespace mlmamba::ui
