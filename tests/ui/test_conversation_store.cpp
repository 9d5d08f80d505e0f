#include <QBuffer>
#include <QDir>
#include <QFile>
#include <QImage>
#include <QJsonDocument>
#include <QJsonObject>
#include <QPainter>
#include <QSet>
#include <QTemporaryDir>
#include <QTest>

#include "conversation_store.h"

using namespace mlmamba::ui;

namespace {

QByteArray readBytes(const QString& path) {
  QFile f(path);
  if (!f.open(QIODevice::ReadOnly)) return {};
  return f.readAll();
}

bool writeBytes(const QString& path, const QByteArray& bytes) {
  QDir().mkpath(QFileInfo(path).absolutePath());
  QFile f(path);
  return f.open(QIODevice::WriteOnly) && f.write(bytes) == bytes.size();
}

// A picture with structure, so a wrong scale or a channel mix-up shows in the pixels.
QImage testPicture(int width, int height) {
  QImage image(width, height, QImage::Format_RGB32);
  image.fill(Qt::white);
  QPainter p(&image);
  p.fillRect(0, 0, width / 2, height, Qt::red);
  p.fillRect(width / 2, 0, width - width / 2, height / 2, Qt::blue);
  return image;
}

QByteArray encode(const QImage& image, const char* format) {
  QByteArray bytes;
  QBuffer buffer(&bytes);
  buffer.open(QIODevice::WriteOnly);
  image.save(&buffer, format);
  return bytes;
}

QDateTime at(const char* iso) {
  return QDateTime::fromString(QString::fromLatin1(iso), Qt::ISODateWithMs);
}

void compareConversations(const Conversation& got, const Conversation& want) {
  QCOMPARE(got.id, want.id);
  QCOMPARE(got.title, want.title);
  QCOMPARE(got.created, want.created);
  QCOMPARE(got.updated, want.updated);
  QCOMPARE(got.messages.size(), want.messages.size());
  for (qsizetype i = 0; i < want.messages.size(); ++i) {
    const Message& g = got.messages[i];
    const Message& w = want.messages[i];
    QCOMPARE(g.role, w.role);
    QCOMPARE(g.text, w.text);
    QCOMPARE(g.image, w.image);
    QCOMPARE(g.state, w.state);
    QCOMPARE(g.error, w.error);
    QCOMPARE(g.created, w.created);
    QCOMPARE(g.stats.valid, w.stats.valid);
    QCOMPARE(g.stats.image_encode_ms, w.stats.image_encode_ms);
    QCOMPARE(g.stats.image_rows, w.stats.image_rows);
    QCOMPARE(g.stats.prefill_tokens, w.stats.prefill_tokens);
    QCOMPARE(g.stats.prefill_ms, w.stats.prefill_ms);
    QCOMPARE(g.stats.time_to_first_token_ms, w.stats.time_to_first_token_ms);
    QCOMPARE(g.stats.generated_tokens, w.stats.generated_tokens);
    QCOMPARE(g.stats.decode_tokens_per_s, w.stats.decode_tokens_per_s);
    QCOMPARE(g.stats.peak_memory_bytes, w.stats.peak_memory_bytes);
  }
}

QStringList filesUnder(const QString& folder) {
  QStringList out;
  const QFileInfoList entries =
      QDir(folder).entryInfoList(QDir::Files | QDir::Dirs | QDir::NoDotAndDotDot, QDir::Name);
  for (const QFileInfo& e : entries) {
    out << e.fileName();
    if (e.isDir())
      for (const QString& inner : filesUnder(e.absoluteFilePath()))
        out << e.fileName() + '/' + inner;
  }
  return out;
}

}  // namespace

class TestConversationStore : public QObject {
  Q_OBJECT

 private slots:
  void roundTripWithPictureAndStats() {
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    ConversationStore store(dir.path() + "/conversations");
    Conversation c = store.create(QStringLiteral("Shapes on a table"));
    QVERIFY(ConversationStore::isValidId(c.id));

    const QImage picture = testPicture(64, 48);
    const ImportedImage imported = store.importImage(c.id, picture);
    QVERIFY2(imported.ok(), qPrintable(imported.status.message));
    QVERIFY(imported.name.startsWith("images/"));
    QVERIFY(imported.name.endsWith(".png"));

    Message q;
    q.role = Message::Role::User;
    q.text = QStringLiteral("What is left of the blue square? \"quoted\" ünïcødé\nsecond line");
    q.image = imported.name;
    q.created = at("2024-05-01T10:00:00.123Z");
    Message a;
    a.role = Message::Role::Assistant;
    a.text = QStringLiteral("A red rectangle.");
    a.created = at("2024-05-01T10:00:01.456Z");
    a.stats = {12.25, 729, 801, 95.5, 101.75, 5, 48.123456789, 3221225472LL, true};
    Message stopped;
    stopped.role = Message::Role::Assistant;
    stopped.text = QStringLiteral("Partial");
    stopped.state = Message::State::Stopped;
    stopped.created = at("2024-05-01T10:01:00.000Z");
    Message failed;
    failed.role = Message::Role::Assistant;
    failed.state = Message::State::Failed;
    failed.error = QStringLiteral("The model ran out of memory.");
    failed.created = at("2024-05-01T10:02:00.000Z");
    c.messages = {q, a, stopped, failed};
    c.created = at("2024-05-01T09:59:59.999Z");
    c.updated = at("2024-05-01T10:02:00.000Z");
    QVERIFY(store.save(c).ok());

    ConversationStore reopened(dir.path() + "/conversations");
    const LoadedConversations loaded = reopened.loadAll();
    QVERIFY(loaded.problems.isEmpty());
    QCOMPARE(loaded.conversations.size(), 1);
    compareConversations(loaded.conversations[0], c);

    const QString picturePath = reopened.imagePath(c.id, q.image);
    QCOMPARE(picturePath, dir.path() + "/conversations/" + c.id + "/" + q.image);
    QImage back(picturePath);
    QCOMPARE(back.size(), picture.size());
    QCOMPARE(back.convertToFormat(QImage::Format_RGB32), picture);

    const QJsonObject json =
        QJsonDocument::fromJson(readBytes(store.folderOf(c.id) + "/conversation.json")).object();
    QCOMPARE(json.value("format").toString(), QStringLiteral("mlmamba-conversation"));
    QCOMPARE(json.value("version").toInt(), 1);
  }

  void streamingIsSavedAsStopped() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    Conversation c = store.create();
    Message m;
    m.role = Message::Role::Assistant;
    m.text = QStringLiteral("Half an ans");
    m.state = Message::State::Streaming;
    c.messages = {m};
    QVERIFY(store.save(c).ok());
    QVERIFY(!readBytes(store.folderOf(c.id) + "/conversation.json").contains("streaming"));
    const LoadedConversations loaded = store.loadAll();
    QCOMPARE(loaded.conversations.size(), 1);
    QCOMPARE(loaded.conversations[0].messages[0].state, Message::State::Stopped);
    QCOMPARE(loaded.conversations[0].messages[0].text, QStringLiteral("Half an ans"));
  }

  void loadAllSortsNewestFirst() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    const QStringList order = {"2024-01-02T00:00:00.000Z", "2024-03-01T00:00:00.000Z",
                               "2023-12-31T00:00:00.000Z"};
    QStringList ids;
    for (const QString& when : order) {
      Conversation c = store.create(when);
      c.updated = QDateTime::fromString(when, Qt::ISODateWithMs);
      QVERIFY(store.save(c).ok());
      ids << c.id;
    }
    const LoadedConversations loaded = store.loadAll();
    QCOMPARE(loaded.conversations.size(), 3);
    QCOMPARE(loaded.conversations[0].id, ids[1]);
    QCOMPARE(loaded.conversations[1].id, ids[0]);
    QCOMPARE(loaded.conversations[2].id, ids[2]);
  }

  void damagedFilesAreReportedAndLeftUntouched() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    Conversation good = store.create(QStringLiteral("fine"));
    QVERIFY(store.save(good).ok());

    struct Damage {
      QString id;
      QByteArray bytes;
    };
    const QVector<Damage> damaged = {
        {"broken-json", "{\"format\": \"mlmamba-conversation\", \"version\": 1, \"messa"},
        {"other-format", R"({"format": "something-else", "version": 1, "id": "other-format"})"},
        {"bad-role",
         R"({"format":"mlmamba-conversation","version":1,"id":"bad-role","messages":[{"role":"robot","text":"x"}]})"},
        {"escaping-image",
         R"({"format":"mlmamba-conversation","version":1,"id":"escaping-image","messages":[{"role":"user","text":"x","image":"../../secret.png"}]})"},
        {"text-not-string",
         R"({"format":"mlmamba-conversation","version":1,"id":"text-not-string","messages":[{"role":"user","text":42}]})"},
        {"empty", ""},
    };
    for (const Damage& d : damaged)
      QVERIFY(writeBytes(dir.path() + "/" + d.id + "/conversation.json", d.bytes));

    const LoadedConversations loaded = store.loadAll();
    QCOMPARE(loaded.conversations.size(), 1);
    QCOMPARE(loaded.conversations[0].id, good.id);
    QCOMPARE(loaded.problems.size(), damaged.size());
    QSet<QString> reportedPaths;
    for (const StoreProblem& p : loaded.problems) {
      reportedPaths.insert(p.path);
      QVERIFY2(!p.reason.isEmpty(), qPrintable(p.path));
      QVERIFY(!p.newerVersion);
    }
    for (const Damage& d : damaged) {
      const QString path = dir.path() + "/" + d.id + "/conversation.json";
      QVERIFY2(reportedPaths.contains(path), qPrintable(path));
      QVERIFY(store.isProtected(d.id));

      Conversation overwrite;
      overwrite.id = d.id;
      overwrite.title = QStringLiteral("replacement");
      QCOMPARE(store.save(overwrite).code, StoreStatus::Code::Protected);
      QCOMPARE(store.rename(d.id, QStringLiteral("x")).code, StoreStatus::Code::Protected);
      QCOMPARE(store.remove(d.id).code, StoreStatus::Code::Protected);
      QCOMPARE(store.importImage(d.id, testPicture(4, 4)).status.code,
               StoreStatus::Code::Protected);
      QCOMPARE(readBytes(path), d.bytes);
      QCOMPARE(filesUnder(dir.path() + "/" + d.id), QStringList{"conversation.json"});
    }

    // A second loadAll reports them again rather than having "repaired" anything.
    QCOMPARE(store.loadAll().problems.size(), damaged.size());
  }

  void damageIsCheckedEvenWithoutLoadAll() {
    QTemporaryDir dir;
    ConversationStore first(dir.path());
    Conversation c = first.create();
    QVERIFY(first.save(c).ok());
    const QString path = first.folderOf(c.id) + "/conversation.json";
    const QByteArray garbage = "\x00\x01 not json";
    QVERIFY(writeBytes(path, garbage));
    // This store never listed the folder, yet must not save over what is there now.
    ConversationStore second(dir.path());
    QCOMPARE(second.save(c).code, StoreStatus::Code::Protected);
    QCOMPARE(readBytes(path), garbage);
  }

  void newerVersionIsReportedAndNotOverwritten() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    const QString id = QStringLiteral("20300101-000000-000-abcdef");
    const QByteArray future =
        R"({"format":"mlmamba-conversation","version":2,"id":"20300101-000000-000-abcdef",)"
        R"("title":"From the future","messages":[{"role":"user","parts":[{"kind":"video"}]}]})";
    const QString path = dir.path() + "/" + id + "/conversation.json";
    QVERIFY(writeBytes(path, future));

    const LoadedConversations loaded = store.loadAll();
    QVERIFY(loaded.conversations.isEmpty());
    QCOMPARE(loaded.problems.size(), 1);
    QCOMPARE(loaded.problems[0].path, path);
    QVERIFY(loaded.problems[0].newerVersion);
    QVERIFY(loaded.problems[0].reason.contains("newer"));

    Conversation c;
    c.id = id;
    c.title = QStringLiteral("Downgraded");
    const StoreStatus status = store.save(c);
    QCOMPARE(status.code, StoreStatus::Code::Protected);
    QVERIFY(!status.message.isEmpty());
    QCOMPARE(store.remove(id).code, StoreStatus::Code::Protected);
    QCOMPARE(readBytes(path), future);
  }

  void leftoverPartialWriteNeverReplacesTheFile() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    Conversation c = store.create(QStringLiteral("Kept"));
    Message m;
    m.text = QStringLiteral("first question");
    c.messages = {m};
    QVERIFY(store.save(c).ok());
    const QString folder = store.folderOf(c.id);
    const QString path = folder + "/conversation.json";

    // What an interrupted write leaves beside the real file: a temporary with half the JSON.
    const QByteArray whole = readBytes(path);
    const QString leftover = path + ".Xy12Ab";
    QVERIFY(writeBytes(leftover, whole.left(whole.size() / 2)));

    LoadedConversations loaded = store.loadAll();
    QVERIFY(loaded.problems.isEmpty());
    QCOMPARE(loaded.conversations.size(), 1);
    QCOMPARE(loaded.conversations[0].messages.size(), 1);

    // Saving goes through a new temporary and a rename; the leftover stays what it was and the
    // real file is whole JSON after every save.
    c.messages.append(m);
    QVERIFY(store.save(c).ok());
    QCOMPARE(readBytes(leftover), whole.left(whole.size() / 2));
    QJsonParseError error;
    QJsonDocument::fromJson(readBytes(path), &error);
    QCOMPARE(error.error, QJsonParseError::NoError);
    loaded = store.loadAll();
    QVERIFY(loaded.problems.isEmpty());
    QCOMPARE(loaded.conversations[0].messages.size(), 2);

    // The save left no temporary of its own behind.
    const QStringList files = QDir(folder).entryList(QDir::Files, QDir::Name);
    QCOMPARE(files, (QStringList{"conversation.json", "conversation.json.Xy12Ab"}));
  }

  void hugePicturesAreScaledDown() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    const QString id = ConversationStore::newId();

    // From a file (JPEG decodes straight at the smaller size), with a misleading extension.
    const QString jpeg = dir.path() + "/wide.bin";
    QVERIFY(writeBytes(jpeg, encode(testPicture(6000, 1500), "jpg")));
    ImportedImage fromFile = store.importImageFile(id, jpeg);
    QVERIFY2(fromFile.ok(), qPrintable(fromFile.status.message));
    QImage stored(store.imagePath(id, fromFile.name));
    QCOMPARE(stored.size(), QSize(2048, 512));
    // Left half red, top right blue: the picture was scaled, not cropped or mirrored.
    QVERIFY(qRed(stored.pixel(100, 256)) > 200 && qBlue(stored.pixel(100, 256)) < 60);
    QVERIFY(qBlue(stored.pixel(1900, 100)) > 200 && qRed(stored.pixel(1900, 100)) < 60);

    // A tall PNG file.
    const QString png = dir.path() + "/tall.png";
    QVERIFY(writeBytes(png, encode(testPicture(1000, 4096), "png")));
    ImportedImage tall = store.importImageFile(id, png);
    QVERIFY2(tall.ok(), qPrintable(tall.status.message));
    QCOMPARE(QImage(store.imagePath(id, tall.name)).size(), QSize(500, 2048));

    // Decoded and encoded inputs.
    ImportedImage decoded = store.importImage(id, testPicture(3000, 3000));
    QVERIFY(decoded.ok());
    QCOMPARE(QImage(store.imagePath(id, decoded.name)).size(), QSize(2048, 2048));
    ImportedImage data = store.importImageData(id, encode(testPicture(2049, 10), "png"));
    QVERIFY(data.ok());
    QCOMPARE(QImage(store.imagePath(id, data.name)).size().width(), 2048);

    // At the limit: untouched.
    ImportedImage exact = store.importImage(id, testPicture(2048, 100));
    QCOMPARE(QImage(store.imagePath(id, exact.name)).size(), QSize(2048, 100));
  }

  void samePictureIsStoredOnce() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    const QString id = ConversationStore::newId();
    const ImportedImage a = store.importImage(id, testPicture(32, 32));
    const ImportedImage b = store.importImageData(id, encode(testPicture(32, 32), "bmp"));
    const ImportedImage c = store.importImage(id, testPicture(33, 32));
    QVERIFY(a.ok() && b.ok() && c.ok());
    QCOMPARE(a.name, b.name);
    QVERIFY(a.name != c.name);
    QCOMPARE(QDir(store.folderOf(id) + "/images").entryList(QDir::Files).size(), 2);
  }

  void nonPicturesAreRefusedClearly() {
    QTemporaryDir dir;
    ConversationStore store(dir.path() + "/store");
    const QString id = ConversationStore::newId();

    const QString text = dir.path() + "/notes.png";
    QVERIFY(writeBytes(text, "These are my notes, not a picture.\n"));
    ImportedImage r = store.importImageFile(id, text);
    QCOMPARE(r.status.code, StoreStatus::Code::NotAnImage);
    QVERIFY(r.name.isEmpty());
    QVERIFY2(r.status.message.contains("notes.png"), qPrintable(r.status.message));

    const QByteArray png = encode(testPicture(300, 300), "png");
    const QString truncated = dir.path() + "/cut.png";
    QVERIFY(writeBytes(truncated, png.left(png.size() / 3)));
    r = store.importImageFile(id, truncated);
    QCOMPARE(r.status.code, StoreStatus::Code::NotAnImage);
    QVERIFY2(r.status.message.contains("cut.png"), qPrintable(r.status.message));

    const QString empty = dir.path() + "/empty.jpg";
    QVERIFY(writeBytes(empty, {}));
    QCOMPARE(store.importImageFile(id, empty).status.code, StoreStatus::Code::NotAnImage);

    QCOMPARE(store.importImageFile(id, dir.path() + "/missing.png").status.code,
             StoreStatus::Code::NotFound);
    QCOMPARE(store.importImageData(id, QByteArray("<html>a web page</html>")).status.code,
             StoreStatus::Code::NotAnImage);
    QCOMPARE(store.importImage(id, QImage()).status.code, StoreStatus::Code::NotAnImage);
    QCOMPARE(store.importImage(QStringLiteral("../escape"), testPicture(4, 4)).status.code,
             StoreStatus::Code::InvalidId);

    // Nothing was written for any of them.
    QVERIFY(!QDir(store.folderOf(id) + "/images").exists() ||
            QDir(store.folderOf(id) + "/images").isEmpty());
    QVERIFY(!QFileInfo::exists(dir.path() + "/escape"));
  }

  void renameKeepsOrderAndRemoveDeletesTheFolder() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    Conversation c = store.create(QStringLiteral("Old title"));
    c.updated = at("2024-02-02T02:02:02.002Z");
    Message m;
    m.text = QStringLiteral("hello");
    m.image = store.importImage(c.id, testPicture(8, 8)).name;
    c.messages = {m};
    QVERIFY(store.save(c).ok());

    QVERIFY(store.rename(c.id, QStringLiteral("New title")).ok());
    LoadedConversations loaded = store.loadAll();
    QCOMPARE(loaded.conversations.size(), 1);
    QCOMPARE(loaded.conversations[0].title, QStringLiteral("New title"));
    QCOMPARE(loaded.conversations[0].updated, c.updated);
    QCOMPARE(loaded.conversations[0].messages[0].image, m.image);
    QCOMPARE(store.rename(QStringLiteral("no-such-id"), QStringLiteral("x")).code,
             StoreStatus::Code::NotFound);

    QVERIFY(store.remove(c.id).ok());
    QVERIFY(!QFileInfo::exists(store.folderOf(c.id)));
    QVERIFY(store.loadAll().conversations.isEmpty());
    QCOMPARE(store.remove(c.id).code, StoreStatus::Code::NotFound);

    // Ids that could name something outside the store are refused before touching the disk.
    QVERIFY(writeBytes(dir.path() + "/keep.txt", "keep"));
    for (const QString& bad : {QString(), QStringLiteral(".."), QStringLiteral("."),
                               QStringLiteral("a/b"), QStringLiteral("../x")}) {
      QCOMPARE(store.remove(bad).code, StoreStatus::Code::InvalidId);
      Conversation wrong;
      wrong.id = bad;
      QCOMPARE(store.save(wrong).code, StoreStatus::Code::InvalidId);
    }
    QVERIFY(QFileInfo::exists(dir.path() + "/keep.txt"));
    QVERIFY(QFileInfo::exists(dir.path()));
  }

  void foldersWithoutAConversationAreSkipped() {
    QTemporaryDir dir;
    ConversationStore store(dir.path());
    // A picture imported for a conversation whose first message was never saved.
    QVERIFY(store.importImage(ConversationStore::newId(), testPicture(4, 4)).ok());
    const LoadedConversations loaded = store.loadAll();
    QVERIFY(loaded.conversations.isEmpty());
    QVERIFY(loaded.problems.isEmpty());
  }

  void missingRootLoadsEmpty() {
    QTemporaryDir dir;
    ConversationStore store(dir.path() + "/not/yet");
    const LoadedConversations loaded = store.loadAll();
    QVERIFY(loaded.conversations.isEmpty());
    QVERIFY(loaded.problems.isEmpty());
    QVERIFY(store.save(store.create()).ok());
    QCOMPARE(store.loadAll().conversations.size(), 1);
  }

  void newIdsAreUniqueAndSafe() {
    QSet<QString> seen;
    for (int i = 0; i < 2000; ++i) {
      const QString id = ConversationStore::newId();
      QVERIFY2(ConversationStore::isValidId(id), qPrintable(id));
      seen.insert(id);
    }
    QCOMPARE(seen.size(), 2000);
    QVERIFY(!ConversationStore::isValidId(u"a b"));
    QVERIFY(!ConversationStore::isValidId(u"a.json"));
    QVERIFY(!ConversationStore::isValidId(u""));
  }
};

QTEST_GUILESS_MAIN(TestConversationStore)
#include "test_conversation_store.moc"
