// The webcam panel driven through its buttons, with a Motion-JPEG clip standing in for a camera and
// a slow scripted answerer standing in for the engine.
#include <QCheckBox>
#include <QComboBox>
#include <QDir>
#include <QElapsedTimer>
#include <QLabel>
#include <QLineEdit>
#include <QPointer>
#include <QPushButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QTemporaryDir>
#include <QTest>
#include <QTimer>

#include <cstdlib>

#include "camera_panel.h"
#include "frame_source.h"

using mlmamba::ui::CameraInfo;
using mlmamba::ui::CameraPanel;
using mlmamba::ui::CameraSource;
using mlmamba::ui::FrameRead;
using mlmamba::ui::FrameSource;
using mlmamba::ui::StillImageSource;

namespace {

constexpr int kFrames = 20;
constexpr int kTolerance = 9;

QColor frameColour(int i) {
  return QColor(20 + 11 * i, 250 - 11 * i, i % 2 ? 40 : 200);
}

int frameIndex(const QImage& image) {
  if (image.isNull()) return -1;
  const QColor c = image.pixelColor(image.width() / 2, image.height() / 2);
  for (int i = 0; i < kFrames; ++i) {
    const QColor e = frameColour(i);
    if (std::abs(c.red() - e.red()) <= kTolerance &&
        std::abs(c.green() - e.green()) <= kTolerance &&
        std::abs(c.blue() - e.blue()) <= kTolerance) {
      return i;
    }
  }
  return -1;
}

template <typename T>
T* named(QWidget* root, const QString& accessible_name) {
  for (T* w : root->findChildren<T*>()) {
    if (w->accessibleName() == accessible_name) return w;
  }
  return nullptr;
}

// Frames, then nothing but failures: a camera pulled out.
class UnpluggedSource : public FrameSource {
 public:
  QString description() const override { return QStringLiteral("Camera 5"); }
  bool open(QString*) override { return true; }
  FrameRead read() override {
    FrameRead r;
    if (reads_++ < 3) {
      r.status = FrameRead::Status::Frame;
      r.image = QImage(32, 24, QImage::Format_RGB888);
      r.image.fill(Qt::green);
    } else {
      r.error = QStringLiteral("Camera 5 was disconnected.");
    }
    return r;
  }
  int frameIntervalMs() const override { return 5; }

 private:
  int reads_ = 0;
};

// Answers each live question after `delay_ms`, and records how many were ever outstanding at once.
struct SlowAnswerer {
  SlowAnswerer(CameraPanel* panel, int delay_ms, bool fail = false) : panel(panel) {
    QObject::connect(panel, &CameraPanel::liveQuestion, panel,
                     [this, delay_ms, fail](const QImage& frame, const QString& question) {
                       ++asked;
                       ++outstanding;
                       max_outstanding = std::max(max_outstanding, outstanding);
                       if (frame.isNull()) ++null_frames;
                       last_question = question;
                       const int n = asked;
                       QTimer::singleShot(delay_ms, this->panel, [this, n, fail] {
                         --outstanding;
                         if (fail) {
                           this->panel->liveAnswerFailed(QStringLiteral("engine busy %1").arg(n));
                         } else {
                           this->panel->liveAnswer(QStringLiteral("answer %1").arg(n));
                         }
                       });
                     });
  }
  CameraPanel* panel;
  int asked = 0;
  int outstanding = 0;
  int max_outstanding = 0;
  int null_frames = 0;
  QString last_question;
};

}  // namespace

class TestCameraPanel : public QObject {
  Q_OBJECT

 private slots:
  void initTestCase() {
    QVERIFY(dir_.isValid());
    QVector<QImage> frames;
    for (int i = 0; i < kFrames; ++i) {
      QImage image(64, 48, QImage::Format_RGB888);
      image.fill(frameColour(i));
      frames.push_back(image);
    }
    clip_ = dir_.filePath(QStringLiteral("clip.avi"));
    QString error;
    QVERIFY2(mlmamba::ui::writeVideoFile(clip_, frames, 25, &error), qPrintable(error));
  }

  void everyControlHasAnAccessibleName() {
    CameraPanel panel(7);
    panel.resize(640, 620);
    panel.show();
    QVERIFY(QTest::qWaitForWindowExposed(&panel));
    int controls = 0;
    for (QWidget* w : panel.findChildren<QWidget*>()) {
      const bool control = qobject_cast<QAbstractButton*>(w) || qobject_cast<QComboBox*>(w) ||
                           qobject_cast<QLineEdit*>(w) || qobject_cast<QAbstractSpinBox*>(w);
      // Inner parts of compound controls (a spin box's editor, a line edit's clear button) are
      // named by the control that holds them.
      QWidget* parent = w->parentWidget();
      if (!control || qobject_cast<QLineEdit*>(parent) || qobject_cast<QAbstractSpinBox*>(parent) ||
          qobject_cast<QComboBox*>(parent)) {
        continue;
      }
      ++controls;
      QVERIFY2(!w->accessibleName().isEmpty(), w->metaObject()->className());
    }
    QCOMPARE(controls, 8);  // chooser, refresh, loop, start, capture, question, live, interval
    QVERIFY(named<QWidget>(&panel, QStringLiteral("Camera preview")));
    QCOMPARE(named<QSpinBox>(&panel, QStringLiteral("Live interval in seconds"))->value(), 7);

    auto* combo = named<QComboBox>(&panel, QStringLiteral("Picture source"));
    QVERIFY(combo);
    QVERIFY(combo->findText(QStringLiteral("Video file…")) >= 0);
    QVERIFY(combo->findText(QStringLiteral("None")) >= 0);
  }

  void noCameraListedGivesAClearMessage() {
    CameraPanel panel;
    panel.setCameras({});
    auto* status = named<QLabel>(&panel, QStringLiteral("Camera status"));
    QVERIFY(status->text().startsWith(QStringLiteral("No camera found")));
    auto* combo = named<QComboBox>(&panel, QStringLiteral("Picture source"));
    QCOMPARE(combo->currentText(), QStringLiteral("None"));
    QVERIFY(!named<QPushButton>(&panel, QStringLiteral("Start preview"))->isEnabled());
    QVERIFY(!named<QPushButton>(&panel, QStringLiteral("Capture frame"))->isEnabled());

    // A camera plugged in later is selected on Refresh, unless the person picked "None".
    const QVector<CameraInfo> one{{3, QStringLiteral("Camera 3"), QStringLiteral("/dev/video3")}};
    panel.setCameras(one);
    QCOMPARE(combo->currentText(), QStringLiteral("Camera 3"));
    QVERIFY(named<QPushButton>(&panel, QStringLiteral("Start preview"))->isEnabled());
    combo->setCurrentIndex(combo->findText(QStringLiteral("None")));
    emit combo->activated(combo->currentIndex());
    panel.setCameras(one);
    QCOMPARE(combo->currentText(), QStringLiteral("None"));
  }

  // A camera that is listed but gone by the time Start is pressed: message, and the panel goes on
  // working with another source.
  void cameraThatIsNotThereFailsClearlyAndThePanelKeepsWorking() {
    CameraPanel panel;
    panel.setCameras(
        {CameraInfo{97, QStringLiteral("Desk camera"), QStringLiteral("/dev/video97")}});
    auto* combo = named<QComboBox>(&panel, QStringLiteral("Picture source"));
    QCOMPARE(combo->currentText(), QStringLiteral("Camera 97: Desk camera"));
    QSignalSpy chosen(&panel, &CameraPanel::cameraChosen);
    QSignalSpy running(&panel, &CameraPanel::runningChanged);
    QElapsedTimer clock;
    clock.start();
    QTest::mouseClick(named<QPushButton>(&panel, QStringLiteral("Start preview")), Qt::LeftButton);
    QCOMPARE(chosen.count(), 1);
    QCOMPARE(chosen.at(0).at(0).toInt(), 97);
    auto* status = named<QLabel>(&panel, QStringLiteral("Camera status"));
    QTRY_VERIFY_WITH_TIMEOUT(
        status->text().startsWith(QStringLiteral("No camera found at index 97")), 2000);
    QVERIFY(clock.elapsed() < 2000);
    QVERIFY(!panel.isRunning());
    QCOMPARE(running.last().at(0).toBool(), false);
    QVERIFY(named<QPushButton>(&panel, QStringLiteral("Start preview")));

    panel.setVideoFile(clip_);
    QCOMPARE(combo->currentText(), QStringLiteral("clip.avi"));
    QTest::mouseClick(named<QPushButton>(&panel, QStringLiteral("Start preview")), Qt::LeftButton);
    QTRY_VERIFY_WITH_TIMEOUT(!panel.newestFrame().isNull(), 2000);
    QVERIFY(panel.isRunning());
    QVERIFY(status->text().startsWith(QStringLiteral("Showing clip.avi")));
  }

  void captureEmitsTheNewestFrameFrozen() {
    CameraPanel panel;
    panel.setCameras({});
    panel.setVideoFile(clip_);
    named<QCheckBox>(&panel, QStringLiteral("Loop the video file"))->setChecked(true);
    QSignalSpy captured(&panel, &CameraPanel::frameCaptured);
    auto* capture = named<QPushButton>(&panel, QStringLiteral("Capture frame"));
    QVERIFY(!capture->isEnabled());
    panel.startSelected();
    QTRY_VERIFY_WITH_TIMEOUT(capture->isEnabled(), 2000);
    QTest::qWait(200);

    const QImage newest = panel.newestFrame();
    QTest::mouseClick(capture, Qt::LeftButton);
    QCOMPARE(captured.count(), 1);
    const QImage frame = captured.at(0).at(0).value<QImage>();
    QCOMPARE(frame, newest);
    const int index = frameIndex(frame);
    QVERIFY(index >= 0);
    // Later frames replace the preview, not the captured picture.
    QTRY_VERIFY_WITH_TIMEOUT(frameIndex(panel.newestFrame()) != index, 2000);
    QCOMPARE(frameIndex(frame), index);
    QCOMPARE(frame, newest);
  }

  void aFinishedVideoKeepsItsLastFrameForCapture() {
    CameraPanel panel;
    panel.setCameras({});
    panel.setVideoFile(clip_);
    named<QCheckBox>(&panel, QStringLiteral("Loop the video file"))->setChecked(false);
    QSignalSpy running(&panel, &CameraPanel::runningChanged);
    QSignalSpy captured(&panel, &CameraPanel::frameCaptured);
    panel.startSelected();
    QTRY_VERIFY_WITH_TIMEOUT(running.count() == 2, 5000);
    QCOMPARE(running.last().at(0).toBool(), false);
    auto* status = named<QLabel>(&panel, QStringLiteral("Camera status"));
    QVERIFY2(status->text().startsWith(QStringLiteral("clip.avi has ended")),
             qPrintable(status->text()));
    QCOMPARE(named<QPushButton>(&panel, QStringLiteral("Start preview"))->text(),
             QStringLiteral("Start"));
    panel.captureFrame();
    QCOMPARE(captured.count(), 1);
    QCOMPARE(frameIndex(captured.at(0).at(0).value<QImage>()), kFrames - 1);
  }

  void unpluggedCameraShowsWhy() {
    CameraPanel panel;
    panel.setCameras({});
    panel.startSource(std::make_unique<UnpluggedSource>());
    auto* status = named<QLabel>(&panel, QStringLiteral("Camera status"));
    QTRY_VERIFY_WITH_TIMEOUT(
        status->text().startsWith(QStringLiteral("Camera 5 was disconnected.")), 3000);
    QVERIFY(!panel.isRunning());
    // The last picture stays available.
    QCOMPARE(panel.newestFrame().pixelColor(1, 1), QColor(Qt::green));
  }

  void liveModeNeverHasMoreThanOneQuestionOutstanding() {
    CameraPanel panel;
    panel.setCameras({});
    panel.setVideoFile(clip_);
    named<QCheckBox>(&panel, QStringLiteral("Loop the video file"))->setChecked(true);
    panel.startSelected();
    QTRY_VERIFY_WITH_TIMEOUT(!panel.newestFrame().isNull(), 2000);

    SlowAnswerer answerer(&panel, 350);
    QTest::keyClicks(named<QLineEdit>(&panel, QStringLiteral("Live question")),
                     QStringLiteral("What colour fills the frame?"));
    panel.setLiveInterval(std::chrono::milliseconds(100));
    auto* live = named<QCheckBox>(&panel, QStringLiteral("Live mode"));
    QTest::mouseClick(live, Qt::LeftButton);
    QVERIFY(panel.isLiveMode());
    // The first question goes out at once.
    QCOMPARE(answerer.asked, 1);
    QVERIFY(panel.isAwaitingAnswer());

    QTest::qWait(1600);
    QVERIFY2(answerer.asked >= 3, qPrintable(QString::number(answerer.asked)));
    QCOMPARE(answerer.max_outstanding, 1);
    QCOMPARE(answerer.null_frames, 0);
    QCOMPARE(answerer.last_question, QStringLiteral("What colour fills the frame?"));
    QCOMPARE(panel.questionsAsked(), answerer.asked);
    // 350 ms answers at 100 ms ticks: about three ticks skipped per question.
    QVERIFY2(panel.skippedTicks() >= 2 * (answerer.asked - 1),
             qPrintable(QString::number(panel.skippedTicks())));
    auto* answer = named<QLabel>(&panel, QStringLiteral("Latest live answer"));
    QTRY_VERIFY_WITH_TIMEOUT(answer->text().startsWith(QStringLiteral("answer ")), 1000);
    QVERIFY(named<QLabel>(&panel, QStringLiteral("Time of the latest live answer"))
                ->text()
                .contains(QStringLiteral("answered in")));

    // Off: the outstanding answer still lands, and no further question follows it.
    QTest::mouseClick(live, Qt::LeftButton);
    QVERIFY(!panel.isLiveMode());
    const int asked = answerer.asked;
    QTRY_VERIFY_WITH_TIMEOUT(!panel.isAwaitingAnswer(), 1000);
    QTest::qWait(300);
    QCOMPARE(answerer.asked, asked);
    QCOMPARE(answer->text(), QStringLiteral("answer %1").arg(asked));
    QCOMPARE(answerer.outstanding, 0);
  }

  void aFailedAnswerLetsTheNextQuestionGo() {
    CameraPanel panel;
    panel.setCameras({});
    QImage still(40, 30, QImage::Format_RGB888);
    still.fill(Qt::yellow);
    panel.startSource(std::make_unique<StillImageSource>(still));
    QTRY_VERIFY_WITH_TIMEOUT(!panel.newestFrame().isNull(), 2000);
    SlowAnswerer answerer(&panel, 50, true);
    panel.setQuestion(QStringLiteral("Anything there?"));
    panel.setLiveInterval(std::chrono::milliseconds(100));
    panel.setLiveMode(true);
    QTRY_VERIFY_WITH_TIMEOUT(answerer.asked >= 3, 2000);
    QCOMPARE(answerer.max_outstanding, 1);
    auto* answer = named<QLabel>(&panel, QStringLiteral("Latest live answer"));
    QVERIFY(answer->text().startsWith(QStringLiteral("No answer: engine busy")));
    panel.setLiveMode(false);
    QVERIFY(!named<QCheckBox>(&panel, QStringLiteral("Live mode"))->isChecked());
  }

  void liveModeWithoutQuestionOrPictureAsksNothing() {
    CameraPanel panel;
    panel.setCameras({});
    SlowAnswerer answerer(&panel, 10);
    panel.setLiveInterval(std::chrono::milliseconds(50));
    panel.setQuestion(QStringLiteral("What is this?"));
    panel.setLiveMode(true);
    QTest::qWait(200);
    QCOMPARE(answerer.asked, 0);
    auto* live_status = named<QLabel>(&panel, QStringLiteral("Live mode status"));
    QVERIFY(live_status->text().startsWith(QStringLiteral("Waiting for a picture")));

    QImage still(40, 30, QImage::Format_RGB888);
    still.fill(Qt::cyan);
    panel.startSource(std::make_unique<StillImageSource>(still));
    panel.setQuestion(QStringLiteral("   "));
    QTest::qWait(300);
    QCOMPARE(answerer.asked, 0);
    QVERIFY(live_status->text().startsWith(QStringLiteral("Type a question")));

    panel.setQuestion(QStringLiteral("What is this?"));
    QTRY_VERIFY_WITH_TIMEOUT(answerer.asked >= 1, 1000);
    // An answer nobody asked for (a late one from an earlier run) changes nothing.
    QTRY_VERIFY_WITH_TIMEOUT(!panel.isAwaitingAnswer(), 1000);
    panel.setLiveMode(false);
    QTest::qWait(50);
    auto* answer = named<QLabel>(&panel, QStringLiteral("Latest live answer"));
    const QString before = answer->text();
    panel.liveAnswer(QStringLiteral("unexpected"));
    QCOMPARE(answer->text(), before);
  }

  void intervalChangesAreReported() {
    CameraPanel panel(5);
    QSignalSpy changed(&panel, &CameraPanel::liveIntervalChanged);
    auto* spin = named<QSpinBox>(&panel, QStringLiteral("Live interval in seconds"));
    QCOMPARE(panel.liveInterval(), std::chrono::milliseconds(5000));
    spin->setValue(12);
    QCOMPARE(changed.count(), 1);
    QCOMPARE(changed.at(0).at(0).toInt(), 12);
    QCOMPARE(panel.liveInterval(), std::chrono::milliseconds(12000));
    // Out-of-range values from the settings file are clamped.
    CameraPanel clamped(0);
    QCOMPARE(named<QSpinBox>(&clamped, QStringLiteral("Live interval in seconds"))->value(), 1);
  }

  void stopStartAndDestructionWhileRunningAreClean() {
    auto* panel = new CameraPanel;
    panel->setCameras({});
    panel->setVideoFile(clip_);
    named<QCheckBox>(panel, QStringLiteral("Loop the video file"))->setChecked(true);
    auto* start = named<QPushButton>(panel, QStringLiteral("Start preview"));
    for (int round = 0; round < 5; ++round) {
      QTest::mouseClick(start, Qt::LeftButton);
      QVERIFY(panel->isRunning());
      auto* stop = named<QPushButton>(panel, QStringLiteral("Stop preview"));
      QVERIFY(stop);
      QCOMPARE(stop, start);
      QTest::qWait(round * 30);
      QTest::mouseClick(stop, Qt::LeftButton);
      QVERIFY(!panel->isRunning());
      QCOMPARE(start->text(), QStringLiteral("Start"));
    }
    // "None" stops a running source.
    QTest::mouseClick(start, Qt::LeftButton);
    QTRY_VERIFY_WITH_TIMEOUT(!panel->newestFrame().isNull(), 2000);
    auto* combo = named<QComboBox>(panel, QStringLiteral("Picture source"));
    combo->setCurrentIndex(combo->findText(QStringLiteral("None")));
    emit combo->activated(combo->currentIndex());
    QVERIFY(!panel->isRunning());
    QVERIFY(!start->isEnabled());
    combo->setCurrentIndex(combo->findText(QStringLiteral("clip.avi")));
    emit combo->activated(combo->currentIndex());
    QVERIFY(start->isEnabled());

    // Destroyed while frames arrive and a live question is outstanding.
    QTest::mouseClick(start, Qt::LeftButton);
    QTest::mouseClick(start, Qt::LeftButton);  // stops
    QTest::mouseClick(start, Qt::LeftButton);  // starts again
    QTRY_VERIFY_WITH_TIMEOUT(!panel->newestFrame().isNull(), 2000);
    int asked = 0;
    connect(panel, &CameraPanel::liveQuestion, this, [&asked] { ++asked; });
    panel->setQuestion(QStringLiteral("Still there?"));
    panel->setLiveMode(true);
    QCOMPARE(asked, 1);
    QPointer<CameraPanel> guard(panel);
    QTimer::singleShot(100, panel, [&] { guard->liveAnswer(QStringLiteral("late")); });
    QTest::qWait(20);
    delete panel;
    QVERIFY(guard.isNull());
    QTest::qWait(200);
  }

  // Not a check: a picture of the panel for a person to look at, when asked for.
  void screenshotWhenRequested() {
    const QByteArray out = qgetenv("MLMAMBA_SCREENSHOT_DIR");
    if (out.isEmpty()) QSKIP("set MLMAMBA_SCREENSHOT_DIR to save a picture of the panel");
    CameraPanel panel(5);
    panel.setCameras(
        {CameraInfo{0, QStringLiteral("Integrated Webcam"), QStringLiteral("/dev/video0")}});
    panel.setVideoFile(clip_);
    panel.startSelected();
    QTRY_VERIFY_WITH_TIMEOUT(!panel.newestFrame().isNull(), 2000);
    panel.setQuestion(QStringLiteral("What colour fills the frame?"));
    connect(&panel, &CameraPanel::liveQuestion, &panel,
            [&panel] { panel.liveAnswer(QStringLiteral("The frame is a flat teal colour.")); });
    panel.setLiveInterval(std::chrono::seconds(5));
    panel.setLiveMode(true);
    panel.resize(560, 600);
    panel.show();
    QVERIFY(QTest::qWaitForWindowExposed(&panel));
    QTest::qWait(100);
    QVERIFY(panel.grab().save(QDir(QString::fromLocal8Bit(out)).filePath("camera_panel.png")));

    CameraPanel lost(5);
    lost.setCameras({});
    lost.startSource(std::make_unique<UnpluggedSource>());
    QTRY_VERIFY_WITH_TIMEOUT(!lost.isRunning(), 3000);
    lost.resize(560, 600);
    lost.show();
    QVERIFY(QTest::qWaitForWindowExposed(&lost));
    QVERIFY(lost.grab().save(QDir(QString::fromLocal8Bit(out)).filePath("camera_panel_lost.png")));
  }

 private:
  QTemporaryDir dir_;
  QString clip_;
};

QTEST_MAIN(TestCameraPanel)
#include "test_camera_panel.moc"
