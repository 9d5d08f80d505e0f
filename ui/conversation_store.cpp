#include "conversation_store.h"

#include <QBuffer>
#include <QCryptographicHash>
#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QImageReader>
#include <QImageWriter>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QRandomGenerator>
#include <QRegularExpression>
#include <QSaveFile>

#include <algorithm>
#include <cmath>
#include <optional>

namespace mlmamba::ui {

namespace {

const QString kFormatName = QStringLiteral("mlmamba-conversation");
const QString kFileName = QStringLiteral("conversation.json");
const QString kImagesFolder = QStringLiteral("images");
// Far beyond any real conversation (text and picture names); a larger file is not one of ours, and
// reading it whole at start-up would stall the window.
constexpr qint64 kMaxFileBytes = 64 * 1024 * 1024;

StoreStatus failure(StoreStatus::Code code, QString message) {
  return StoreStatus{code, std::move(message)};
}

bool isValidImageName(const QString& relative) {
  static const QRegularExpression pattern(QStringLiteral("^images/[A-Za-z0-9_-][A-Za-z0-9._-]*$"));
  return pattern.match(relative).hasMatch();
}

QString roleName(Message::Role role) {
  return role == Message::Role::User ? QStringLiteral("user") : QStringLiteral("assistant");
}

QString stateName(Message::State state) {
  switch (state) {
    case Message::State::Done:
      return QStringLiteral("done");
    case Message::State::Streaming:  // never on disk: see save()
    case Message::State::Stopped:
      return QStringLiteral("stopped");
    case Message::State::Failed:
      return QStringLiteral("failed");
  }
  return QStringLiteral("done");
}

QJsonValue timeValue(const QDateTime& t) {
  if (!t.isValid()) return QJsonValue(QJsonValue::Null);
  return t.toUTC().toString(Qt::ISODateWithMs);
}

QJsonObject statsObject(const AnswerStats& s) {
  return QJsonObject{
      {"image_encode_ms", s.image_encode_ms},
      {"image_rows", s.image_rows},
      {"prefill_tokens", s.prefill_tokens},
      {"prefill_ms", s.prefill_ms},
      {"time_to_first_token_ms", s.time_to_first_token_ms},
      {"generated_tokens", s.generated_tokens},
      {"decode_tokens_per_s", s.decode_tokens_per_s},
      {"peak_memory_bytes", s.peak_memory_bytes},
  };
}

QByteArray serialize(const Conversation& c) {
  QJsonArray messages;
  for (const Message& m : c.messages) {
    QJsonObject o{
        {"role", roleName(m.role)},
        {"text", m.text},
        {"state", stateName(m.state)},
        {"created", timeValue(m.created)},
    };
    if (!m.image.isEmpty()) o.insert("image", m.image);
    if (!m.error.isEmpty()) o.insert("error", m.error);
    if (m.stats.valid) o.insert("stats", statsObject(m.stats));
    messages.append(o);
  }
  const QJsonObject root{
      {"format", kFormatName},
      {"version", ConversationStore::kFormatVersion},
      {"id", c.id},
      {"title", c.title},
      {"created", timeValue(c.created)},
      {"updated", timeValue(c.updated)},
      {"messages", messages},
  };
  return QJsonDocument(root).toJson(QJsonDocument::Indented);
}

// Reads one file strictly: a field of the wrong type is damage, not something to guess around,
// because saving a guess would overwrite what the person had.
struct Parsed {
  std::optional<Conversation> conversation;
  QString reason;
  bool newer = false;
};

class FieldReader {
 public:
  bool failed() const { return !error.isEmpty(); }
  QString error;

  QString string(const QJsonObject& o, const char* key, const QString& where, bool required) {
    const QJsonValue v = o.value(QLatin1String(key));
    if (v.isString()) return v.toString();
    if ((v.isUndefined() || v.isNull()) && !required) return {};
    fail(where, key, v.isUndefined() ? "is missing" : "is not text");
    return {};
  }

  QDateTime time(const QJsonObject& o, const char* key, const QString& where) {
    const QJsonValue v = o.value(QLatin1String(key));
    if (v.isUndefined() || v.isNull()) return {};
    const QDateTime t = QDateTime::fromString(v.toString(), Qt::ISODateWithMs);
    if (!v.isString() || !t.isValid()) fail(where, key, "is not a date and time");
    return t;
  }

  double number(const QJsonObject& o, const char* key, const QString& where) {
    const QJsonValue v = o.value(QLatin1String(key));
    if (v.isUndefined()) return 0;
    if (!v.isDouble()) fail(where, key, "is not a number");
    return v.toDouble();
  }

 private:
  void fail(const QString& where, const char* key, const char* what) {
    if (error.isEmpty()) error = QStringLiteral("%1\"%2\" %3").arg(where, key, what);
  }
};

Parsed parse(const QByteArray& bytes, const QString& folderId) {
  Parsed out;
  QJsonParseError jsonError;
  const QJsonDocument doc = QJsonDocument::fromJson(bytes, &jsonError);
  if (jsonError.error != QJsonParseError::NoError) {
    out.reason = QStringLiteral("not valid JSON (%1 at byte %2)")
                     .arg(jsonError.errorString())
                     .arg(jsonError.offset);
    return out;
  }
  if (!doc.isObject()) {
    out.reason = QStringLiteral("not a conversation file (the JSON is not an object)");
    return out;
  }
  const QJsonObject root = doc.object();
  if (root.value("format").toString() != kFormatName) {
    out.reason = QStringLiteral("not a conversation file (format is not \"%1\")").arg(kFormatName);
    return out;
  }
  const QJsonValue versionValue = root.value("version");
  const double version = versionValue.toDouble(-1);
  if (!versionValue.isDouble() || version != std::floor(version) || version < 1) {
    out.reason = QStringLiteral("\"version\" is missing or not a positive whole number");
    return out;
  }
  if (version > ConversationStore::kFormatVersion) {
    out.newer = true;
    out.reason = QStringLiteral(
                     "written by a newer version of the program (format version %1; "
                     "this version reads up to %2)")
                     .arg(qint64(version))
                     .arg(ConversationStore::kFormatVersion);
    return out;
  }

  FieldReader read;
  Conversation c;
  c.id = read.string(root, "id", {}, true);
  c.title = read.string(root, "title", {}, false);
  c.created = read.time(root, "created", {});
  c.updated = read.time(root, "updated", {});
  if (read.failed()) {
    out.reason = read.error;
    return out;
  }
  if (c.id != folderId) {
    out.reason =
        QStringLiteral("its id \"%1\" does not match its folder \"%2\"").arg(c.id, folderId);
    return out;
  }
  const QJsonValue messagesValue = root.value("messages");
  if (!messagesValue.isArray()) {
    out.reason = QStringLiteral("\"messages\" is missing or not a list");
    return out;
  }
  const QJsonArray messages = messagesValue.toArray();
  for (qsizetype i = 0; i < messages.size(); ++i) {
    const QString where = QStringLiteral("message %1: ").arg(i + 1);
    if (!messages[i].isObject()) {
      out.reason = where + QStringLiteral("not an object");
      return out;
    }
    const QJsonObject o = messages[i].toObject();
    Message m;
    const QString role = read.string(o, "role", where, true);
    m.text = read.string(o, "text", where, true);
    m.image = read.string(o, "image", where, false);
    const QString state = read.string(o, "state", where, false);
    m.error = read.string(o, "error", where, false);
    m.created = read.time(o, "created", where);
    if (read.failed()) {
      out.reason = read.error;
      return out;
    }
    if (role == QLatin1String("user")) {
      m.role = Message::Role::User;
    } else if (role == QLatin1String("assistant")) {
      m.role = Message::Role::Assistant;
    } else {
      out.reason = where + QStringLiteral("unknown role \"%1\"").arg(role);
      return out;
    }
    if (state.isEmpty() || state == QLatin1String("done")) {
      m.state = Message::State::Done;
    } else if (state == QLatin1String("stopped") || state == QLatin1String("streaming")) {
      m.state = Message::State::Stopped;
    } else if (state == QLatin1String("failed")) {
      m.state = Message::State::Failed;
    } else {
      out.reason = where + QStringLiteral("unknown state \"%1\"").arg(state);
      return out;
    }
    if (!m.image.isEmpty() && !isValidImageName(m.image)) {
      out.reason =
          where +
          QStringLiteral("picture name \"%1\" is not inside the images folder").arg(m.image);
      return out;
    }
    const QJsonValue statsValue = o.value("stats");
    if (!statsValue.isUndefined() && !statsValue.isNull()) {
      if (!statsValue.isObject()) {
        out.reason = where + QStringLiteral("\"stats\" is not an object");
        return out;
      }
      const QJsonObject s = statsValue.toObject();
      const QString statsWhere = where + QStringLiteral("stats ");
      m.stats.image_encode_ms = read.number(s, "image_encode_ms", statsWhere);
      m.stats.image_rows = int(read.number(s, "image_rows", statsWhere));
      m.stats.prefill_tokens = int(read.number(s, "prefill_tokens", statsWhere));
      m.stats.prefill_ms = read.number(s, "prefill_ms", statsWhere);
      m.stats.time_to_first_token_ms = read.number(s, "time_to_first_token_ms", statsWhere);
      m.stats.generated_tokens = int(read.number(s, "generated_tokens", statsWhere));
      m.stats.decode_tokens_per_s = read.number(s, "decode_tokens_per_s", statsWhere);
      m.stats.peak_memory_bytes = qint64(read.number(s, "peak_memory_bytes", statsWhere));
      m.stats.valid = true;
      if (read.failed()) {
        out.reason = read.error;
        return out;
      }
    }
    c.messages.append(m);
  }
  out.conversation = std::move(c);
  return out;
}

// Reads and parses <folder>/conversation.json; `exists` tells a missing file from a bad one.
Parsed readFile(const QString& path, const QString& id, bool* exists) {
  QFile file(path);
  *exists = file.exists();
  Parsed out;
  if (!*exists) return out;
  if (file.size() > kMaxFileBytes) {
    out.reason = QStringLiteral("too large to be a conversation (%1 bytes)").arg(file.size());
    return out;
  }
  if (!file.open(QIODevice::ReadOnly)) {
    out.reason = QStringLiteral("cannot be read (%1)").arg(file.errorString());
    return out;
  }
  return parse(file.readAll(), id);
}

}  // namespace

ConversationStore::ConversationStore(QString root) : root_(QDir::cleanPath(std::move(root))) {}

QString ConversationStore::folderOf(const QString& id) const {
  return root_ + QLatin1Char('/') + id;
}

QString ConversationStore::fileOf(const QString& id) const {
  return folderOf(id) + QLatin1Char('/') + kFileName;
}

QString ConversationStore::imagePathUnder(const QString& root, const QString& id,
                                          const QString& relative) {
  if (!isValidId(id) || !isValidImageName(relative)) return {};
  return root + QLatin1Char('/') + id + QLatin1Char('/') + relative;
}

QString ConversationStore::newId() {
  const QString time =
      QDateTime::currentDateTimeUtc().toString(QStringLiteral("yyyyMMdd-HHmmss-zzz"));
  const quint32 suffix = QRandomGenerator::global()->bounded(0x1000000u);
  return time + QLatin1Char('-') + QString::number(suffix, 16).rightJustified(6, QLatin1Char('0'));
}

bool ConversationStore::isValidId(QStringView id) {
  // Only characters every file system accepts, and nothing that could name "." or "..".
  if (id.isEmpty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](QChar ch) {
    return (ch >= u'a' && ch <= u'z') || (ch >= u'A' && ch <= u'Z') || (ch >= u'0' && ch <= u'9') ||
           ch == u'-' || ch == u'_';
  });
}

Conversation ConversationStore::create(const QString& title) const {
  Conversation c;
  do {
    c.id = newId();
  } while (QFileInfo::exists(folderOf(c.id)));
  c.title = title;
  c.created = QDateTime::currentDateTimeUtc();
  c.updated = c.created;
  return c;
}

LoadedConversations ConversationStore::loadAll() {
  LoadedConversations out;
  protected_.clear();
  const QFileInfoList folders =
      QDir(root_).entryInfoList(QDir::Dirs | QDir::NoDotAndDotDot, QDir::Name);
  for (const QFileInfo& folder : folders) {
    const QString id = folder.fileName();
    const QString path = folder.absoluteFilePath() + QLatin1Char('/') + kFileName;
    if (!isValidId(id)) {
      if (QFileInfo::exists(path))
        out.problems.append({path, QStringLiteral("its folder name is not a conversation id")});
      continue;
    }
    bool exists = false;
    Parsed parsed = readFile(path, id, &exists);
    if (!exists) continue;
    if (!parsed.conversation) {
      protected_.insert(id);
      out.problems.append({path, parsed.reason, parsed.newer});
      continue;
    }
    Conversation& c = *parsed.conversation;
    if (!c.updated.isValid()) c.updated = QFileInfo(path).lastModified();
    if (!c.created.isValid()) c.created = c.updated;
    out.conversations.append(std::move(c));
  }
  std::sort(out.conversations.begin(), out.conversations.end(),
            [](const Conversation& a, const Conversation& b) {
              if (a.updated != b.updated) return a.updated > b.updated;
              return a.id > b.id;
            });
  return out;
}

StoreStatus ConversationStore::checkWritable(const QString& id) {
  if (!isValidId(id))
    return failure(StoreStatus::Code::InvalidId, tr("“%1” is not a conversation id.").arg(id));
  // Checked again on every write, not only at loadAll(): a file can be damaged or replaced by a
  // newer program while this one runs, and saving over it would lose what is there.
  if (!protected_.contains(id)) {
    bool exists = false;
    const Parsed parsed = readFile(fileOf(id), id, &exists);
    if (exists && !parsed.conversation) protected_.insert(id);
  }
  if (protected_.contains(id))
    return failure(StoreStatus::Code::Protected,
                   tr("The conversation file %1 could not be read, so it is left untouched.")
                       .arg(QDir::toNativeSeparators(fileOf(id))));
  return {};
}

StoreStatus ConversationStore::save(const Conversation& conversation) {
  if (StoreStatus status = checkWritable(conversation.id); !status.ok()) return status;
  const QString folder = folderOf(conversation.id);
  if (!QDir().mkpath(folder))
    return failure(StoreStatus::Code::Io,
                   tr("Could not create the folder %1.").arg(QDir::toNativeSeparators(folder)));
  QSaveFile file(fileOf(conversation.id));
  if (!file.open(QIODevice::WriteOnly) || file.write(serialize(conversation)) < 0 || !file.commit())
    return failure(StoreStatus::Code::Io,
                   tr("Could not save the conversation to %1: %2")
                       .arg(QDir::toNativeSeparators(file.fileName()), file.errorString()));
  return {};
}

StoreStatus ConversationStore::remove(const QString& id) {
  if (StoreStatus status = checkWritable(id); !status.ok()) return status;
  QDir folder(folderOf(id));
  if (!folder.exists())
    return failure(StoreStatus::Code::NotFound, tr("There is no conversation “%1”.").arg(id));
  if (!folder.removeRecursively())
    return failure(
        StoreStatus::Code::Io,
        tr("Could not delete %1 completely.").arg(QDir::toNativeSeparators(folder.path())));
  return {};
}

StoreStatus ConversationStore::rename(const QString& id, const QString& title) {
  if (StoreStatus status = checkWritable(id); !status.ok()) return status;
  bool exists = false;
  Parsed parsed = readFile(fileOf(id), id, &exists);
  if (!exists || !parsed.conversation)
    return failure(StoreStatus::Code::NotFound, tr("There is no conversation “%1”.").arg(id));
  parsed.conversation->title = title;
  return save(*parsed.conversation);
}

ImportedImage ConversationStore::importImageFile(const QString& id, const QString& sourcePath) {
  const QString shown = QFileInfo(sourcePath).fileName();
  QFile file(sourcePath);
  if (!file.exists())
    return {{}, failure(StoreStatus::Code::NotFound, tr("“%1” does not exist.").arg(shown))};
  if (!file.open(QIODevice::ReadOnly))
    return {{},
            failure(StoreStatus::Code::Io,
                    tr("“%1” could not be opened: %2").arg(shown, file.errorString()))};
  QImageReader reader(&file);
  reader.setDecideFormatFromContent(true);
  reader.setAutoTransform(true);  // phone photos carry their rotation in EXIF
  if (!reader.canRead())
    return {{},
            failure(StoreStatus::Code::NotAnImage,
                    tr("“%1” is not a picture this program can open.").arg(shown))};
  // Formats that can decode at a smaller size (JPEG) then never allocate the full picture.
  const QSize size = reader.size();
  if (size.isValid() && std::max(size.width(), size.height()) > kMaxImageSide)
    reader.setScaledSize(size.scaled(kMaxImageSide, kMaxImageSide, Qt::KeepAspectRatio));
  QImage image = reader.read();
  if (image.isNull())
    return {{},
            failure(StoreStatus::Code::NotAnImage, tr("“%1” looks like a picture but could not be "
                                                      "read (%2).")
                                                       .arg(shown, reader.errorString()))};
  return storeImage(id, std::move(image), shown);
}

ImportedImage ConversationStore::importImageData(const QString& id, const QByteArray& encoded) {
  QBuffer buffer;
  buffer.setData(encoded);
  buffer.open(QIODevice::ReadOnly);
  QImageReader reader(&buffer);
  reader.setAutoTransform(true);
  const QString shown = tr("The dropped data");
  if (!reader.canRead())
    return {{},
            failure(StoreStatus::Code::NotAnImage,
                    tr("%1 is not a picture this program can open.").arg(shown))};
  const QSize size = reader.size();
  if (size.isValid() && std::max(size.width(), size.height()) > kMaxImageSide)
    reader.setScaledSize(size.scaled(kMaxImageSide, kMaxImageSide, Qt::KeepAspectRatio));
  QImage image = reader.read();
  if (image.isNull())
    return {{},
            failure(StoreStatus::Code::NotAnImage,
                    tr("%1 looks like a picture but could not be read (%2).")
                        .arg(shown, reader.errorString()))};
  return storeImage(id, std::move(image), shown);
}

ImportedImage ConversationStore::importImage(const QString& id, const QImage& image) {
  if (image.isNull())
    return {{}, failure(StoreStatus::Code::NotAnImage, tr("The picture is empty."))};
  return storeImage(id, image, tr("The picture"));
}

ImportedImage ConversationStore::storeImage(const QString& id, QImage image,
                                            const QString& origin) {
  if (StoreStatus status = checkWritable(id); !status.ok()) return {{}, status};
  if (std::max(image.width(), image.height()) > kMaxImageSide)
    image =
        image.scaled(kMaxImageSide, kMaxImageSide, Qt::KeepAspectRatio, Qt::SmoothTransformation);

  QByteArray png;
  {
    QBuffer buffer(&png);
    buffer.open(QIODevice::WriteOnly);
    QImageWriter writer(&buffer, "png");
    if (!writer.write(image))
      return {{},
              failure(StoreStatus::Code::NotAnImage,
                      tr("%1 could not be stored as PNG (%2).").arg(origin, writer.errorString()))};
  }
  // Named by content: attaching the same picture twice stores it once.
  const QString hash = QString::fromLatin1(
      QCryptographicHash::hash(png, QCryptographicHash::Sha256).toHex().left(32));
  const QString relative = kImagesFolder + QLatin1Char('/') + hash + QStringLiteral(".png");
  const QString folder = folderOf(id) + QLatin1Char('/') + kImagesFolder;
  const QString path = folderOf(id) + QLatin1Char('/') + relative;
  if (QFileInfo(path).size() == png.size()) return {relative, {}};
  if (!QDir().mkpath(folder))
    return {{},
            failure(StoreStatus::Code::Io,
                    tr("Could not create the folder %1.").arg(QDir::toNativeSeparators(folder)))};
  QSaveFile file(path);
  if (!file.open(QIODevice::WriteOnly) || file.write(png) != png.size() || !file.commit())
    return {{},
            failure(StoreStatus::Code::Io,
                    tr("Could not save the picture to %1: %2")
                        .arg(QDir::toNativeSeparators(path), file.errorString()))};
  return {relative, {}};
}

}  // namespace mlmamba::ui
