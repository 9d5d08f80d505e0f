#include "inference_worker.h"

#include <QBuffer>
#include <QCryptographicHash>
#include <QDateTime>
#include <QFileInfo>
#include <QMutexLocker>
#include <cstring>
#include <optional>

namespace mlmamba::ui {
namespace {

// Tokens reach the GUI in pieces no more often than this: a repaint per token would cost more
// than generating it on a small model.
constexpr qint64 kFlushMs = 30;

QString turn_fingerprint(const Message& user, const Message& reply) {
  QCryptographicHash h(QCryptographicHash::Sha1);
  h.addData(user.text.toUtf8());
  h.addData(QByteArrayView("\x1f"));
  h.addData(user.image.toUtf8());
  h.addData(QByteArrayView("\x1f"));
  h.addData(reply.text.toUtf8());
  return QString::fromLatin1(h.result().toHex());
}

AnswerStats to_stats(const Stats& s) {
  AnswerStats a;
  a.image_encode_ms = s.image_encode_ms;
  a.image_rows = s.image_rows;
  a.prefill_tokens = s.prefill_tokens;
  a.prefill_ms = s.prefill_ms;
  a.time_to_first_token_ms = s.time_to_first_token_ms;
  a.generated_tokens = s.generated_tokens;
  a.decode_tokens_per_s = s.decode_tokens_per_s;
  a.peak_memory_bytes = s.peak_memory_bytes;
  a.valid = true;
  return a;
}

}  // namespace

InferenceWorker::InferenceWorker() {
  qRegisterMetaType<GenerationSettings>();
  qRegisterMetaType<ModelSummary>();
  qRegisterMetaType<AnswerStats>();
  qRegisterMetaType<Message>();
  qRegisterMetaType<QVector<Message>>();
}

InferenceWorker::~InferenceWorker() = default;

void InferenceWorker::stop(quint64 request) {
  QMutexLocker lock(&current_mutex_);
  if (current_ && current_request_ == request) {
    current_->cancel();
  } else {
    stopped_early_ = request;
  }
}

void InferenceWorker::loadModel(const QString& folder, const QString& device) {
  LoadParams p;
  p.model_dir = folder.toStdString();
  auto dev = parse_device(device.toStdString());
  if (!dev.ok()) {
    emit modelLoadFailed(folder, QString::fromStdString(dev.error().message));
    return;
  }
  p.device = *dev;
  auto m = Model::load(p);
  if (!m.ok()) {
    emit modelLoadFailed(folder, QString::fromStdString(m.error().message));
    return;
  }
  model_ = *m;
  kept_.clear();  // states belong to the previous model
  const ModelInfo& i = model_->info();
  ModelSummary s;
  s.name = QString::fromStdString(i.name);
  s.folder = folder;
  s.device = QString::fromStdString(i.device);
  s.fallback_reason = QString::fromStdString(i.fallback_reason);
  s.has_vision = i.has_vision;
  s.parameters = i.parameters;
  emit modelLoaded(s);
}

void InferenceWorker::forget(const QString& conversation) {
  kept_.erase(conversation);
}

InferenceWorker::Kept& InferenceWorker::prepare(const QString& conversation,
                                                const QVector<Message>& history, QString* error) {
  Kept& k = kept_[conversation];
  if (!k.session) {
    k.session = std::make_unique<Session>(model_);
    k.snapshots = {k.session->snapshot()};
    k.fingerprints = {QString()};
  }
  const int turns = static_cast<int>(history.size() / 2);
  std::vector<QString> wanted;
  for (int t = 0; t < turns; ++t)
    wanted.push_back(turn_fingerprint(history[2 * t], history[2 * t + 1]));
  // The longest prefix of the wanted turns the kept snapshots already hold.
  int same = 0;
  while (same < turns && same + 1 < static_cast<int>(k.snapshots.size()) &&
         k.fingerprints[static_cast<size_t>(same) + 1] == wanted[static_cast<size_t>(same)]) {
    ++same;
  }
  // Older snapshots are dropped to bound memory (see trim()): go back to the latest one kept.
  while (same > 0 && !k.snapshots[static_cast<size_t>(same)]) --same;
  // The live state is already the last snapshot when the conversation simply goes on.
  if (same != static_cast<int>(k.snapshots.size()) - 1)
    k.session->restore(k.snapshots[static_cast<size_t>(same)]);
  k.snapshots.resize(static_cast<size_t>(same) + 1);
  k.fingerprints.resize(static_cast<size_t>(same) + 1);
  // Turns not kept (a reopened conversation, an edit further back) are fed from their text.
  for (int t = same; t < turns; ++t) {
    const Message& user = history[2 * t];
    const Message& reply = history[2 * t + 1];
    std::optional<ImageInput> image;
    if (!user.image.isEmpty()) image = ImageInput::from_file(user.image.toStdString());
    auto r = k.session->feed_turn(user.text.toStdString(), reply.text.toStdString(),
                                  image ? &*image : nullptr);
    if (!r.ok()) {
      *error = QString::fromStdString(r.error().message);
      k.session->reset();
      k.snapshots = {k.session->snapshot()};
      k.fingerprints = {QString()};
      return k;
    }
    k.snapshots.push_back(k.session->snapshot());
    k.fingerprints.push_back(wanted[static_cast<size_t>(t)]);
  }
  trim(k);
  return k;
}

void InferenceWorker::trim(Kept& k) {
  // A snapshot is the whole recurrent state (about 170 MB for the 2.7B language model): keep the
  // empty one and the last few turns, enough for Regenerate and recent edits; an edit further
  // back rebuilds from the text.
  constexpr size_t kKeptTurns = 3;
  for (size_t i = 1; i + kKeptTurns < k.snapshots.size(); ++i) k.snapshots[i].reset();
}

GenerateParams InferenceWorker::params(const GenerationSettings& s, quint64 request,
                                       QString* pending, qint64* last_flush) {
  GenerateParams gp;
  gp.max_new_tokens =
      s.max_new_tokens > 0 ? s.max_new_tokens : model_->info().default_max_new_tokens;
  gp.sampling.temperature = s.temperature;
  gp.sampling.top_k = s.top_k;
  gp.sampling.top_p = s.top_p;
  gp.sampling.repetition_penalty = s.repetition_penalty;
  gp.sampling.seed = s.seed;
  gp.on_token = [this, request, pending, last_flush](const Token& t) {
    pending->append(QString::fromStdString(t.text));
    const qint64 now = QDateTime::currentMSecsSinceEpoch();
    if (now - *last_flush >= kFlushMs && !pending->isEmpty()) {
      emit tokens(request, *pending);
      pending->clear();
      *last_flush = now;
    }
  };
  return gp;
}

void InferenceWorker::run(quint64 request, Session& session, const QString& text,
                          const ImageInput* image, const GenerationSettings& settings, Kept* kept) {
  QString pending;
  qint64 last_flush = 0;
  GenerateParams gp = params(settings, request, &pending, &last_flush);
  {
    QMutexLocker lock(&current_mutex_);
    if (stopped_early_ == request) {
      stopped_early_ = 0;
      emit finished(request, QString(), AnswerStats{}, true);
      return;
    }
    current_ = &session;
    current_request_ = request;
  }
  auto g = session.ask(text.toStdString(), gp, image);
  {
    QMutexLocker lock(&current_mutex_);
    current_ = nullptr;
  }
  if (!pending.isEmpty()) emit tokens(request, pending);
  if (!g.ok()) {
    // Stopped before the first token (still reading the picture or the question): an empty,
    // stopped answer, not a failure.
    if (g.error().code == ErrorCode::kCancelled) {
      emit finished(request, QString(), AnswerStats{}, true);
    } else {
      emit failed(request, QString::fromStdString(g.error().message));
    }
    return;
  }
  const bool stopped = g->stop == StopReason::kCancelled;
  if (kept) {
    // The state after this turn; its fingerprint is recorded once the GUI sends it back as history.
    kept->snapshots.push_back(session.snapshot());
    trim(*kept);
    Message user, reply;
    user.text = text;
    user.image =
        image && !image->file.empty() ? QString::fromStdString(image->file.string()) : QString();
    reply.text = QString::fromStdString(g->text);
    kept->fingerprints.push_back(turn_fingerprint(user, reply));
  }
  emit finished(request, QString::fromStdString(g->text), to_stats(g->stats), stopped);
}

void InferenceWorker::ask(quint64 request, const QString& conversation,
                          const QVector<Message>& history, const QString& text,
                          const QString& image, const GenerationSettings& settings) {
  if (!model_) {
    emit failed(request, tr("No model is loaded."));
    return;
  }
  QString error;
  // Only the open conversation and a few recent ones keep a live state.
  if (kept_.find(conversation) == kept_.end() && kept_.size() >= 4) kept_.erase(kept_.begin());
  Kept& k = prepare(conversation, history, &error);
  if (!error.isEmpty()) {
    emit failed(request, tr("The conversation could not be restored: %1").arg(error));
    return;
  }
  std::optional<ImageInput> picture;
  if (!image.isEmpty()) picture = ImageInput::from_file(image.toStdString());
  run(request, *k.session, text, picture ? &*picture : nullptr, settings, &k);
}

void InferenceWorker::askAboutFrame(quint64 request, const QImage& frame, const QString& question,
                                    const GenerationSettings& settings) {
  if (!model_) {
    emit failed(request, tr("No model is loaded."));
    return;
  }
  const QImage rgb = frame.convertToFormat(QImage::Format_RGB888);
  std::vector<uint8_t> px(static_cast<size_t>(rgb.width()) * rgb.height() * 3);
  for (int y = 0; y < rgb.height(); ++y) {
    std::memcpy(px.data() + static_cast<size_t>(y) * rgb.width() * 3, rgb.constScanLine(y),
                static_cast<size_t>(rgb.width()) * 3);
  }
  const auto picture = ImageInput::from_rgb(rgb.width(), rgb.height(), std::move(px));
  Session session(model_);
  run(request, session, question, &picture, settings, nullptr);
}

}  // namespace mlmamba::ui
