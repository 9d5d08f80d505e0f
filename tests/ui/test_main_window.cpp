// The window as a person uses it, against the real engine and a real model package (the tiny
// two-encoder package of the golden tests): drops, paste, send, stream, stop, regenerate,
// persistence.
#include <QAbstractButton>
#include <QAbstractSpinBox>
#include <QApplication>
#include <QClipboard>
#include <QComboBox>
#include <QDropEvent>
#include <QFile>
#include <QLineEdit>
#include <QListView>
#include <QMessageBox>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QSettings>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTextEdit>
#include <QtTest>

#include "composer.h"
#include "main_window.h"

using namespace mlmamba::ui;

class TestMainWindow : public QObject {
  Q_OBJECT

 private:
  const QString model_ = QStringLiteral(MLMAMBA_FIXTURES "/mlmamba_tiny_dual");
  const QString picture_ = model_ + QStringLiteral("/shapes_96x80.png");
  const QString long_picture_ = model_ + QStringLiteral("/photo_50x130.png");
  QTemporaryDir dir_;
  std::unique_ptr<QSettings> ini_;
  std::unique_ptr<Settings> settings_;

  std::unique_ptr<MainWindow> open() {
    auto w = std::make_unique<MainWindow>(settings_.get(), dir_.path() + "/conversations", model_);
    QSignalSpy loaded(w->engine(), &InferenceController::modelLoaded);
    if (!w->engine()->modelReady()) loaded.wait(30000);
    return w;
  }

  // A drag entering and dropping, sent straight to the window's handlers.
  void drop(MainWindow* w, QMimeData* mime) {
    QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
    static_cast<QObject*>(w)->event(&enter);
    QVERIFY(enter.isAccepted());
    QDropEvent ev(QPointF(10, 10), Qt::CopyAction, mime, Qt::LeftButton, Qt::NoModifier);
    static_cast<QObject*>(w)->event(&ev);
  }

  bool answer(MainWindow* w, int timeout_ms = 60000) {
    QSignalSpy done(w, &MainWindow::answerFinished);
    w->send();
    return done.wait(timeout_ms);
  }

 private slots:
  void initTestCase() {
    QVERIFY(dir_.isValid());
    ini_ = std::make_unique<QSettings>(dir_.path() + "/settings.ini", QSettings::IniFormat);
    settings_ = std::make_unique<Settings>(ini_.get());
    QVERIFY(QFile::exists(picture_));
  }

  void loadsTheModelOnAWorkerThread() {
    auto w = open();
    QVERIFY(w->engine()->modelReady());
    QVERIFY(w->statusText().contains("mlmamba_tiny_dual"));
    QVERIFY(w->statusText().contains("cpu"));
  }

  void dropsAFileImageDataAndEncodedBytes() {
    auto w = open();
    auto* files = new QMimeData;
    files->setUrls({QUrl::fromLocalFile(picture_)});
    drop(w.get(), files);
    QVERIFY(w->composer()->hasAttachment());
    QCOMPARE(w->composer()->attachmentFile(), picture_);
    w->composer()->removeAttachment();
    QVERIFY(!w->composer()->hasAttachment());

    auto* pixels = new QMimeData;
    pixels->setImageData(QImage(picture_));
    drop(w.get(), pixels);
    QVERIFY(w->composer()->hasAttachment());
    QVERIFY(w->composer()->attachmentFile().isEmpty());
    w->composer()->removeAttachment();

    // What a browser offers: the encoded file under its MIME type.
    QFile f(picture_);
    QVERIFY(f.open(QIODevice::ReadOnly));
    auto* bytes = new QMimeData;
    bytes->setData("image/png", f.readAll());
    drop(w.get(), bytes);
    QVERIFY2(w->composer()->hasAttachment(), qPrintable(w->composer()->notice()));
    delete files;
    delete pixels;
    delete bytes;
  }

  void aCorruptPictureGetsAClearMessageInPlace() {
    auto w = open();
    const QString fake = dir_.path() + "/not-a-picture.png";
    QFile f(fake);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write("this is text, not a PNG");
    f.close();
    QVERIFY(!w->openFile(fake));
    QVERIFY(!w->composer()->hasAttachment());
    QVERIFY(w->composer()->notice().contains("not-a-picture.png"));
    auto* junk = new QMimeData;
    junk->setData("image/png", QByteArray("garbage"));
    drop(w.get(), junk);
    QVERIFY(!w->composer()->hasAttachment());
    QVERIFY(!w->composer()->notice().isEmpty());
    delete junk;
  }

  void pastesAPicture() {
    auto w = open();
    QApplication::clipboard()->setImage(QImage(picture_));
    w->composer()->editor()->setFocus();
    w->composer()->editor()->paste();
    QVERIFY(w->composer()->hasAttachment());
  }

  void sendsAndStreamsAnAnswerThenSavesIt() {
    auto w = open();
    QVERIFY(w->openFile(picture_));
    w->composer()->setText("What shapes do you see?");
    QVERIFY(answer(w.get()));
    QCOMPARE(w->chat()->rowCount(), 2);
    const QModelIndex a = w->chat()->index(1);
    QCOMPARE(a.data(ChatModel::StateRole).toInt(), int(Message::State::Done));
    QVERIFY(!a.data(ChatModel::TextRole).toString().isEmpty());
    QVERIFY(!a.data(ChatModel::StatsRole).toMap().isEmpty());
    QVERIFY(!w->chat()->index(0).data(ChatModel::ImageRole).toString().isEmpty());
    QVERIFY(!w->composer()->hasAttachment());  // sent with the question
    const QString id = w->chat()->conversation().id;
    QVERIFY(QFile::exists(dir_.path() + "/conversations/" + id + "/conversation.json"));
    QCOMPARE(w->conversations()->rowCount(), 1);

    // A follow-up reuses the kept state: only its own tokens are read.
    w->composer()->setText("And what colour is the circle?");
    QVERIFY(answer(w.get()));
    QCOMPARE(w->chat()->rowCount(), 4);
    const QVariantMap stats = w->chat()->index(3).data(ChatModel::StatsRole).toMap();
    QVERIFY(stats.value("prefill_tokens").toInt() < 30);
  }

  void stopKeepsThePartialAnswer() {
    QVERIFY(settings_->setValue(setting::maxNewTokens, 4000));
    auto w = open();
    QVERIFY(w->openFile(long_picture_));
    w->composer()->setText("Tell me everything.");
    QSignalSpy done(w.get(), &MainWindow::answerFinished);
    // Stop at once: the worker may not even have started, and the stop must still count.
    w->send();
    w->stop();
    QVERIFY(done.wait(60000));
    QCOMPARE(w->chat()->index(1).data(ChatModel::StateRole).toInt(), int(Message::State::Stopped));
    // Stop once the answer has visibly started: the words so far stay.
    w->composer()->setText("Tell me everything again.");
    QMetaObject::Connection c =
        connect(w->engine(), &InferenceController::tokens, w.get(), [&] { w->stop(); });
    w->send();
    QVERIFY(done.wait(60000));
    disconnect(c);
    const QModelIndex a = w->chat()->index(3);
    QVERIFY(!a.data(ChatModel::TextRole).toString().isEmpty());
    // Either the stop landed mid-answer, or the answer had already ended on its own.
    QVERIFY(a.data(ChatModel::StateRole).toInt() == int(Message::State::Stopped) ||
            a.data(ChatModel::StateRole).toInt() == int(Message::State::Done));
    settings_->setValue(setting::maxNewTokens, 0);
  }

  void regenerateGivesTheSameGreedyAnswer() {
    auto w = open();
    QVERIFY(w->openFile(picture_));
    w->composer()->setText("What shapes do you see?");
    QVERIFY(answer(w.get()));
    const QString first = w->chat()->index(1).data(ChatModel::TextRole).toString();
    QSignalSpy done(w.get(), &MainWindow::answerFinished);
    w->regenerate();
    QVERIFY(done.wait(60000));
    QCOMPARE(w->chat()->rowCount(), 2);
    QCOMPARE(w->chat()->index(1).data(ChatModel::TextRole).toString(), first);
    // Edit and resend replaces the question and what followed.
    w->editAndResend(0, "Describe the image.");
    QVERIFY(done.wait(60000));
    QCOMPARE(w->chat()->rowCount(), 2);
    QCOMPARE(w->chat()->index(0).data(ChatModel::TextRole).toString(),
             QString("Describe the image."));
  }

  void theBundledModelAnswersASampleOutOfTheBox() {
    // What a person gets on first start: the bundled model and a sample picture it ships with.
    auto w = std::make_unique<MainWindow>(
        settings_.get(), dir_.path() + "/conversations-demo",
        QStringLiteral(MLMAMBA_SOURCE_DIR "/resources/models/shapes-demo"));
    QSignalSpy loaded(w->engine(), &InferenceController::modelLoaded);
    if (!w->engine()->modelReady()) QVERIFY(loaded.wait(60000));
    QVERIFY(w->statusText().contains("shapes-demo") || w->statusText().contains("Shapes demo"));
    QVERIFY(w->openFile(QStringLiteral(MLMAMBA_SOURCE_DIR "/resources/samples/shapes-1.png")));
    w->composer()->setText("How many shapes are there?");
    QVERIFY(answer(w.get()));
    QCOMPARE(w->chat()->index(1).data(ChatModel::TextRole).toString(), QString("6"));
    // The follow-up reads only its own tokens, not the 81 picture rows again.
    w->composer()->setText("What color is the triangle?");
    QVERIFY(answer(w.get()));
    QCOMPARE(w->chat()->index(3).data(ChatModel::TextRole).toString(), QString("red"));
    const QVariantMap stats = w->chat()->index(3).data(ChatModel::StatsRole).toMap();
    QVERIFY2(stats.value("prefill_tokens").toInt() < 30,
             qPrintable(QString::number(stats.value("prefill_tokens").toInt())));
  }

  void everyControlHasAnAccessibleName() {
    auto w = open();
    w->show();
    QStringList unnamed;
    int checked = 0;
    const auto widgets = w->findChildren<QWidget*>();
    for (QWidget* c : widgets) {
      const bool control = qobject_cast<QAbstractButton*>(c) || qobject_cast<QLineEdit*>(c) ||
                           qobject_cast<QPlainTextEdit*>(c) || qobject_cast<QTextEdit*>(c) ||
                           qobject_cast<QComboBox*>(c) || qobject_cast<QAbstractSpinBox*>(c) ||
                           qobject_cast<QAbstractItemView*>(c);
      // Qt's own parts of composite widgets (a spin box's line edit, a view's scroll bars) are
      // named through their owner.
      const bool inner = c->parentWidget() && (qobject_cast<QAbstractSpinBox*>(c->parentWidget()) ||
                                               qobject_cast<QComboBox*>(c->parentWidget()));
      if (!control || inner || !c->isVisibleTo(w.get())) continue;
      ++checked;
      if (c->accessibleName().isEmpty())
        unnamed << QString("%1 (%2)").arg(c->objectName(), c->metaObject()->className());
    }
    QVERIFY2(unnamed.isEmpty(), qPrintable(unnamed.join(", ")));
    // The composer, its buttons, the chat view and the conversation list at the least.
    QVERIFY2(checked >= 6, qPrintable(QString::number(checked)));
  }

  void aModelFolderThatFailsToLoadIsNotKept() {
    auto w = open();
    const QString before = settings_->value(setting::modelFolder);
    // A folder that looks like a model (config.json) but whose weights are cut short.
    const QString broken = dir_.path() + "/broken-model";
    QVERIFY(QDir().mkpath(broken));
    for (const QString& f : QDir(model_).entryList(QDir::Files)) {
      QVERIFY(QFile::copy(model_ + "/" + f, broken + "/" + f));
      if (f.endsWith(".safetensors")) QVERIFY(QFile::resize(broken + "/" + f, 100));
    }
    QSignalSpy failed(w->engine(), &InferenceController::modelLoadFailed);
    QString warning;
    // The settings dialog and then the warning are modal: fill in and close each as it appears.
    QTimer driver;
    connect(&driver, &QTimer::timeout, [&] {
      QWidget* modal = QApplication::activeModalWidget();
      if (auto* box = qobject_cast<QMessageBox*>(modal)) {
        warning = box->text();
        box->accept();
      } else if (auto* dlg = qobject_cast<QDialog*>(modal)) {
        for (auto* e : dlg->findChildren<QLineEdit*>())
          if (e->accessibleName() == "Model folder") e->setText(broken);
        dlg->accept();
      }
    });
    driver.start(20);
    w->showSettings();
    QVERIFY(failed.wait(30000) || failed.count() == 1);
    QTRY_VERIFY_WITH_TIMEOUT(!warning.isEmpty(), 10000);
    driver.stop();
    QVERIFY2(warning.contains("broken-model"), qPrintable(warning));
    // The model in use stays, and so does the setting: the next start loads what worked.
    QVERIFY(w->engine()->modelReady());
    QVERIFY(w->statusText().contains("mlmamba_tiny_dual"));
    QCOMPARE(settings_->value(setting::modelFolder), before);
  }

  void conversationsComeBackAfterARestart() {
    const QString root = dir_.path() + "/conversations";
    int before = 0;
    {
      auto w = open();
      before = w->conversations()->rowCount();
      QVERIFY(before >= 1);
    }
    // A damaged file next to them is reported and left byte for byte as it was.
    QDir().mkpath(root + "/20260101-000000-000-broken");
    QFile bad(root + "/20260101-000000-000-broken/conversation.json");
    QVERIFY(bad.open(QIODevice::WriteOnly));
    bad.write("{ not json");
    bad.close();
    auto w = open();
    QCOMPARE(w->conversations()->rowCount(), before);
    QVERIFY(!w->property("storeProblems").toStringList().isEmpty());
    QFile again(root + "/20260101-000000-000-broken/conversation.json");
    QVERIFY(again.open(QIODevice::ReadOnly));
    QCOMPARE(again.readAll(), QByteArray("{ not json"));
    const QString id = w->conversations()->idAt(0);
    w->openConversation(id);
    QVERIFY(w->chat()->rowCount() >= 2);
    // And the conversation goes on from its text.
    w->composer()->setText("Anything else?");
    QVERIFY(answer(w.get()));
    const QModelIndex last = w->chat()->index(w->chat()->rowCount() - 1);
    QVERIFY2(last.data(ChatModel::StateRole).toInt() == int(Message::State::Done),
             qPrintable(last.data(ChatModel::ErrorRole).toString()));
  }
};

QTEST_MAIN(TestMainWindow)
#include "test_main_window.moc"
