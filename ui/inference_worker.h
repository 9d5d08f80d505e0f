// The engine's side of the desktop program. One InferenceWorker lives on its own QThread (owned by
// InferenceController); requests arrive as queued slot calls, results leave as signals. Nothing
// here touches a widget or a model of the GUI.
#pragma once

#include <QHash>
#include <QImage>
#include <QMutex>
#include <QObject>
#include <QString>
#include <QVector>
#include <atomic>
#include <map>
#include <memory>
#include <vector>

#include "conversation.h"
#include "mlmamba/mlmamba.h"

namespace mlmamba::ui {

struct GenerationSettings {
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;
  quint64 seed = 0;
  int max_new_tokens = 0;  // 0: the model's own
};

struct ModelSummary {
  QString name;
  QString folder;
  QString device;
  QString fallback_reason;
  bool has_vision = false;
  qint64 parameters = 0;
};

class InferenceWorker : public QObject {
  Q_OBJECT
 public:
  InferenceWorker();
  ~InferenceWorker() override;

  // Any thread: stops `request` within a token, or before it starts if it is still queued. The
  // partial answer is kept. A stop for a request already finished does nothing.
  void stop(quint64 request);

 public slots:
  void loadModel(const QString& folder, const QString& device);
  // `history` holds the conversation's earlier completed turns (user, assistant, user, ...), each
  // user message with its picture as an absolute path. The worker reuses its kept state when it
  // matches that history, goes back to a snapshot for regenerate / edit, or rebuilds from the text.
  void ask(quint64 request, const QString& conversation,
           const QVector<mlmamba::ui::Message>& history, const QString& text, const QString& image,
           const mlmamba::ui::GenerationSettings& settings);
  // One question about one frame in a fresh conversation (the camera's live mode).
  void askAboutFrame(quint64 request, const QImage& frame, const QString& question,
                     const mlmamba::ui::GenerationSettings& settings);
  void forget(const QString& conversation);

 signals:
  void modelLoaded(const mlmamba::ui::ModelSummary& summary);
  void modelLoadFailed(const QString& folder, const QString& message);
  void tokens(quint64 request, const QString& text);  // coalesced pieces of the answer
  void finished(quint64 request, const QString& text, const mlmamba::ui::AnswerStats& stats,
                bool stopped);
  void failed(quint64 request, const QString& message);

 private:
  struct Kept {
    std::unique_ptr<Session> session;
    // snapshots[i]: the state after i turns, and the fingerprint of those turns.
    std::vector<std::shared_ptr<const Session::Snapshot>> snapshots;
    std::vector<QString> fingerprints;
  };
  Kept& prepare(const QString& conversation, const QVector<Message>& history, QString* error);
  static void trim(Kept& k);
  GenerateParams params(const GenerationSettings& s, quint64 request, QString* pending,
                        qint64* last_flush);
  void run(quint64 request, Session& session, const QString& text, const ImageInput* image,
           const GenerationSettings& settings, Kept* kept);

  std::shared_ptr<const Model> model_;
  std::map<QString, Kept> kept_;  // QHash needs copyable values; a Session is not
  QMutex current_mutex_;
  // Guarded by current_mutex_: the session being generated and its request, and a request
  // stopped before the worker picked it up.
  Session* current_ = nullptr;
  quint64 current_request_ = 0;
  quint64 stopped_early_ = 0;
};

}  // namespace mlmamba::ui

Q_DECLARE_METATYPE(mlmamba::ui::GenerationSettings)
Q_DECLARE_METATYPE(mlmamba::ui::ModelSummary)
Q_DECLARE_METATYPE(mlmamba::ui::AnswerStats)
Q_DECLARE_METATYPE(mlmamba::ui::Message)
