#include "inference_controller.h"

#include <QMetaObject>

namespace mlmamba::ui {

InferenceController::InferenceController(QObject* parent)
    : QObject(parent), worker_(new InferenceWorker) {
  worker_->moveToThread(&thread_);
  thread_.setObjectName("inference");
  connect(&thread_, &QThread::finished, worker_, &QObject::deleteLater);
  connect(worker_, &InferenceWorker::modelLoaded, this, [this](const ModelSummary& s) {
    ready_ = true;
    summary_ = s;
    --outstanding_;
    emit modelLoaded(s);
    settle();
  });
  connect(worker_, &InferenceWorker::modelLoadFailed, this,
          [this](const QString& folder, const QString& message) {
            // The worker keeps the model it had when a new one fails to load.
            ready_ = !summary_.folder.isEmpty();
            --outstanding_;
            emit modelLoadFailed(folder, message);
            settle();
          });
  connect(worker_, &InferenceWorker::tokens, this, &InferenceController::tokens);
  connect(worker_, &InferenceWorker::finished, this,
          [this](quint64 r, const QString& text, const AnswerStats& stats, bool stopped) {
            --outstanding_;
            emit finished(r, text, stats, stopped);
            settle();
          });
  connect(worker_, &InferenceWorker::failed, this, [this](quint64 r, const QString& message) {
    --outstanding_;
    emit failed(r, message);
    settle();
  });
  thread_.start();
}

InferenceController::~InferenceController() {
  // Whatever is running or queued last ends at once; the thread then finishes its event loop.
  for (quint64 r = last_request_; r > 0 && r + 4 > last_request_; --r) worker_->stop(r);
  thread_.quit();
  thread_.wait();
}

void InferenceController::settle() {
  if (outstanding_ == 0) emit busyChanged(false);
}

void InferenceController::loadModel(const QString& folder, const QString& device) {
  ready_ = false;
  if (outstanding_++ == 0) emit busyChanged(true);
  QMetaObject::invokeMethod(worker_, "loadModel", Qt::QueuedConnection, Q_ARG(QString, folder),
                            Q_ARG(QString, device));
}

quint64 InferenceController::ask(const QString& conversation, const QVector<Message>& history,
                                 const QString& text, const QString& image,
                                 const GenerationSettings& settings) {
  const quint64 r = next_request_++;
  last_request_ = r;
  if (outstanding_++ == 0) emit busyChanged(true);
  QMetaObject::invokeMethod(
      worker_, [=, this] { worker_->ask(r, conversation, history, text, image, settings); },
      Qt::QueuedConnection);
  return r;
}

quint64 InferenceController::askAboutFrame(const QImage& frame, const QString& question,
                                           const GenerationSettings& settings) {
  const quint64 r = next_request_++;
  last_request_ = r;
  if (outstanding_++ == 0) emit busyChanged(true);
  QMetaObject::invokeMethod(
      worker_, [=, this] { worker_->askAboutFrame(r, frame, question, settings); },
      Qt::QueuedConnection);
  return r;
}

void InferenceController::forget(const QString& conversation) {
  QMetaObject::invokeMethod(
      worker_, [=, this] { worker_->forget(conversation); }, Qt::QueuedConnection);
}

void InferenceController::stop(quint64 request) {
  worker_->stop(request);
}

}  // namespace mlmamba::ui
