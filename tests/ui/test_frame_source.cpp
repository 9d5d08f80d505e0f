// Frame sources and the grabber thread, with a Motion-JPEG clip written for each run standing in
// for a camera, and scripted sources for failures a clip cannot produce.
#include <QCoreApplication>
#include <QElapsedTimer>
#include <QFile>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>
#include <QThread>

#include <atomic>
#include <cstdlib>
#include <functional>

#include "frame_source.h"

using mlmamba::ui::CameraSource;
using mlmamba::ui::FrameGrabber;
using mlmamba::ui::FrameRead;
using mlmamba::ui::FrameSource;
using mlmamba::ui::StillImageSource;
using mlmamba::ui::VideoFileSource;

namespace {

constexpr int kFrames = 20;
constexpr int kWidth = 64;
constexpr int kHeight = 48;
// Motion JPEG moves a flat colour by a few levels; neighbouring frames differ by 11 in red and
// green and by 160 in blue, so this tolerance cannot confuse two frames.
constexpr int kTolerance = 9;

// Red and blue are never equal, so a frame whose channels came back swapped matches no colour.
QColor frameColour(int i) {
  return QColor(20 + 11 * i, 250 - 11 * i, i % 2 ? 40 : 200);
}

QImage solid(const QColor& colour, int w = kWidth, int h = kHeight) {
  QImage image(w, h, QImage::Format_RGB888);
  image.fill(colour);
  return image;
}

// The centre pixel, away from block edges where JPEG error is largest.
QColor centre(const QImage& image) {
  return image.pixelColor(image.width() / 2, image.height() / 2);
}

// Index of the frame colour `image` shows, or -1 when it matches none.
int frameIndex(const QImage& image) {
  const QColor c = centre(image);
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

QString writeClip(const QTemporaryDir& dir, double fps = 25) {
  QVector<QImage> frames;
  for (int i = 0; i < kFrames; ++i) frames.push_back(solid(frameColour(i)));
  const QString path = dir.filePath(QStringLiteral("clip.avi"));
  QString error;
  if (!mlmamba::ui::writeVideoFile(path, frames, fps, &error)) {
    qWarning("%s", qPrintable(error));
    return {};
  }
  return path;
}

QVector<int> indices(const QSignalSpy& spy) {
  QVector<int> out;
  for (const QList<QVariant>& args : spy) out.push_back(frameIndex(args.at(0).value<QImage>()));
  return out;
}

// A source driven by a function of the read number, for failures and rates a clip cannot give.
class ScriptedSource : public FrameSource {
 public:
  using Script = std::function<FrameRead(int read)>;
  ScriptedSource(Script script, int interval_ms, int open_delay_ms = 0)
      : script_(std::move(script)), interval_ms_(interval_ms), open_delay_ms_(open_delay_ms) {}
  ~ScriptedSource() override { ++closed_or_destroyed; }

  QString description() const override { return QStringLiteral("scripted"); }
  bool open(QString*) override {
    if (open_delay_ms_ > 0) QThread::msleep(open_delay_ms_);
    return true;
  }
  FrameRead read() override { return script_(reads_++); }
  int frameIntervalMs() const override { return interval_ms_; }

  static inline std::atomic<int> closed_or_destroyed{0};

 private:
  Script script_;
  int interval_ms_;
  int open_delay_ms_;
  int reads_ = 0;
};

FrameRead frame(const QImage& image) {
  FrameRead r;
  r.status = FrameRead::Status::Frame;
  r.image = image;
  return r;
}

FrameRead failure(const QString& why) {
  FrameRead r;
  r.status = FrameRead::Status::Failed;
  r.error = why;
  return r;
}

// The read number in the first pixel's red and green, for sources read faster than a GUI shows.
QImage counterImage(int n) {
  return solid(QColor(n % 256, (n / 256) % 256, 0), 8, 8);
}
int counterOf(const QImage& image) {
  const QColor c = image.pixelColor(0, 0);
  return c.red() + 256 * c.green();
}

class QueuedCallCounter : public QObject {
 public:
  int count = 0;
  bool eventFilter(QObject*, QEvent* event) override {
    if (event->type() == QEvent::MetaCall) ++count;
    return false;
  }
};

}  // namespace

class TestFrameSource : public QObject {
  Q_OBJECT

 private slots:
  void initTestCase() {
    QVERIFY(dir_.isValid());
    clip_ = writeClip(dir_);
    QVERIFY(!clip_.isEmpty());
    QVERIFY(QFile(clip_).size() > 0);
  }

  // The clip read directly, without a thread: the reference for what the grabber must deliver.
  void videoFileSourceReadsEveryFrameThenEnds() {
    VideoFileSource source(clip_);
    QString error;
    QVERIFY2(source.open(&error), qPrintable(error));
    QCOMPARE(source.frameIntervalMs(), 40);
    for (int i = 0; i < kFrames; ++i) {
      const FrameRead r = source.read();
      QCOMPARE(int(r.status), int(FrameRead::Status::Frame));
      QCOMPARE(r.image.size(), QSize(kWidth, kHeight));
      QCOMPARE(r.image.format(), QImage::Format_RGB888);
      QCOMPARE(frameIndex(r.image), i);
    }
    QCOMPARE(int(source.read().status), int(FrameRead::Status::End));
  }

  void grabberDeliversFramesInOrderThenFinished() {
    FrameGrabber grabber;
    QSignalSpy opened(&grabber, &FrameGrabber::opened);
    QSignalSpy frames(&grabber, &FrameGrabber::frameReady);
    QSignalSpy finished(&grabber, &FrameGrabber::finished);
    QSignalSpy lost(&grabber, &FrameGrabber::sourceLost);
    QSignalSpy failed(&grabber, &FrameGrabber::failed);
    QElapsedTimer clock;
    clock.start();
    grabber.start(std::make_unique<VideoFileSource>(clip_));
    QVERIFY(grabber.isRunning());
    QVERIFY(finished.wait(10000));
    // 20 frames at 25 fps: played at the file's rate, not as fast as it decodes.
    QVERIFY2(clock.elapsed() >= 600, qPrintable(QString::number(clock.elapsed())));
    QCOMPARE(opened.count(), 1);
    QCOMPARE(opened.at(0).at(0).toString(), QStringLiteral("clip.avi"));
    QCOMPARE(failed.count(), 0);
    QCOMPARE(lost.count(), 0);
    QVERIFY(!grabber.isRunning());

    // An idle GUI thread takes every frame; the drop policy must not lose any here.
    const QVector<int> got = indices(frames);
    QVector<int> expected;
    for (int i = 0; i < kFrames; ++i) expected.push_back(i);
    QCOMPARE(got, expected);
    QCOMPARE(grabber.framesDelivered(), qint64(kFrames));
    QCOMPARE(frameIndex(grabber.latestFrame()), kFrames - 1);
    QCOMPARE(frames.at(0).at(0).value<QImage>().format(), QImage::Format_RGB888);

    // Nothing arrives after finished().
    QTest::qWait(150);
    QCOMPARE(frames.count(), kFrames);
    QCOMPARE(finished.count(), 1);
  }

  void loopingVideoStartsAgainAndNeverFinishes() {
    FrameGrabber grabber;
    QSignalSpy frames(&grabber, &FrameGrabber::frameReady);
    QSignalSpy finished(&grabber, &FrameGrabber::finished);
    grabber.start(std::make_unique<VideoFileSource>(clip_, true));
    QTRY_VERIFY_WITH_TIMEOUT(frames.count() >= kFrames + 5, 10000);
    QCOMPARE(finished.count(), 0);
    QVERIFY(grabber.isRunning());
    const QVector<int> got = indices(frames);
    QCOMPARE(got.at(kFrames - 1), kFrames - 1);
    QCOMPARE(got.at(kFrames), 0);
    QCOMPARE(got.at(kFrames + 1), 1);
    grabber.stop();
    QVERIFY(!grabber.isRunning());
  }

  // The stand-in for a camera pulled out mid-stream: frames, then every read fails.
  void readsThatKeepFailingReportSourceLost() {
    FrameGrabber grabber;
    grabber.setFailuresBeforeLost(4);
    QSignalSpy frames(&grabber, &FrameGrabber::frameReady);
    QSignalSpy lost(&grabber, &FrameGrabber::sourceLost);
    QSignalSpy finished(&grabber, &FrameGrabber::finished);
    std::atomic<int> reads{0};
    grabber.start(std::make_unique<ScriptedSource>(
        [&reads](int n) {
          ++reads;
          return n < 3 ? frame(solid(frameColour(n)))
                       : failure(QStringLiteral("Camera 0 was disconnected."));
        },
        5));
    QVERIFY(lost.wait(5000));
    QCOMPARE(lost.at(0).at(0).toString(), QStringLiteral("Camera 0 was disconnected."));
    QCOMPARE(indices(frames), (QVector<int>{0, 1, 2}));
    QCOMPARE(reads.load(), 3 + 4);  // lost exactly at the limit, and no reads after it
    QCOMPARE(finished.count(), 0);
    QVERIFY(!grabber.isRunning());
  }

  void occasionalFailedReadsAreNotLoss() {
    FrameGrabber grabber;
    grabber.setFailuresBeforeLost(3);
    QSignalSpy frames(&grabber, &FrameGrabber::frameReady);
    QSignalSpy lost(&grabber, &FrameGrabber::sourceLost);
    // Two failures in a row, then a frame, over and over: never three in a row.
    grabber.start(std::make_unique<ScriptedSource>(
        [](int n) {
          return n % 3 == 2 ? frame(counterImage(n)) : failure(QStringLiteral("glitch"));
        },
        2));
    QTRY_VERIFY_WITH_TIMEOUT(frames.count() >= 20, 5000);
    QCOMPARE(lost.count(), 0);
    QVERIFY(grabber.isRunning());
  }

  void missingCameraFailsQuicklyWithClearText() {
    FrameGrabber grabber;
    QSignalSpy failed(&grabber, &FrameGrabber::failed);
    QSignalSpy opened(&grabber, &FrameGrabber::opened);
    QElapsedTimer clock;
    clock.start();
    grabber.start(std::make_unique<CameraSource>(97));
    QVERIFY(failed.wait(2000));
    QVERIFY2(clock.elapsed() < 2000, qPrintable(QString::number(clock.elapsed())));
    const QString message = failed.at(0).at(0).toString();
    QVERIFY2(message.startsWith(QStringLiteral("No camera found at index 97")),
             qPrintable(message));
    QCOMPARE(opened.count(), 0);
    QVERIFY(!grabber.isRunning());
  }

  void listingCamerasDoesNotHang() {
    QElapsedTimer clock;
    clock.start();
    const auto cameras = mlmamba::ui::listCameras();
    QVERIFY2(clock.elapsed() < 2000, qPrintable(QString::number(clock.elapsed())));
    for (const auto& camera : cameras) {
      QVERIFY(camera.index >= 0);
      QVERIFY(!camera.name.isEmpty());
    }

    // A folder without device nodes, and one whose "video0" is a plain file: no cameras either way.
    QTemporaryDir empty;
    QVERIFY(mlmamba::ui::listCameras(10, empty.path()).isEmpty());
    QFile fake(empty.filePath(QStringLiteral("video0")));
    QVERIFY(fake.open(QIODevice::WriteOnly));
    fake.write("not a device");
    fake.close();
    QVERIFY(mlmamba::ui::listCameras(10, empty.path()).isEmpty());
  }

  void missingOrDamagedVideoFileFails() {
    FrameGrabber grabber;
    QSignalSpy failed(&grabber, &FrameGrabber::failed);
    grabber.start(std::make_unique<VideoFileSource>(dir_.filePath(QStringLiteral("nowhere.avi"))));
    QVERIFY(failed.wait(2000));
    QVERIFY2(failed.at(0).at(0).toString().startsWith(QStringLiteral("Video file not found")),
             qPrintable(failed.at(0).at(0).toString()));

    const QString junk = dir_.filePath(QStringLiteral("junk.avi"));
    QFile file(junk);
    QVERIFY(file.open(QIODevice::WriteOnly));
    file.write(QByteArray(4096, 'x'));
    file.close();
    grabber.start(std::make_unique<VideoFileSource>(junk));
    QVERIFY(failed.wait(5000));
    QVERIFY2(failed.at(1).at(0).toString().contains(QStringLiteral("junk.avi")),
             qPrintable(failed.at(1).at(0).toString()));
    QVERIFY(!grabber.isRunning());
  }

  // A GUI that stalls gets the newest frame when it comes back, not a backlog of old ones.
  void slowGuiGetsNewestFrameAndFramesAreDropped() {
    FrameGrabber grabber;
    // Every call the reader queues on the grabber: one per delivered frame at most (plus opened()),
    // however many frames were read while the GUI was blocked.
    QueuedCallCounter calls;
    grabber.installEventFilter(&calls);
    QVector<int> seen;
    connect(&grabber, &FrameGrabber::frameReady, this, [&seen](const QImage& image) {
      seen.push_back(counterOf(image));
      if (seen.size() == 2) QThread::msleep(300);
    });
    grabber.start(
        std::make_unique<ScriptedSource>([](int n) { return frame(counterImage(n)); }, 1));
    QTRY_VERIFY_WITH_TIMEOUT(seen.size() >= 4, 5000);
    grabber.removeEventFilter(&calls);
    grabber.stop();
    QVERIFY2(
        calls.count <= seen.size() + 1,
        qPrintable(QStringLiteral("%1 calls for %2 frames").arg(calls.count).arg(seen.size())));
    // 300 ms of 1 ms reads while the GUI was blocked: the next frame shown is a recent one.
    QVERIFY2(seen.at(2) - seen.at(1) > 100, qPrintable(QString::number(seen.at(2) - seen.at(1))));
    QVERIFY(grabber.framesDropped() > 100);
    for (int i = 1; i < seen.size(); ++i) QVERIFY(seen.at(i) > seen.at(i - 1));
  }

  void stopWhileRunningDeliversNothingMore() {
    FrameGrabber grabber;
    QSignalSpy frames(&grabber, &FrameGrabber::frameReady);
    QSignalSpy finished(&grabber, &FrameGrabber::finished);
    QSignalSpy lost(&grabber, &FrameGrabber::sourceLost);
    grabber.start(
        std::make_unique<ScriptedSource>([](int n) { return frame(counterImage(n)); }, 1));
    QTRY_VERIFY_WITH_TIMEOUT(frames.count() >= 3, 5000);
    // Let reads pile up a queued delivery that stop() must make stale.
    QThread::msleep(20);
    grabber.stop();
    QVERIFY(!grabber.isRunning());
    const int count = frames.count();
    QTest::qWait(100);
    QCOMPARE(frames.count(), count);
    QCOMPARE(finished.count() + lost.count(), 0);
    grabber.stop();  // twice is harmless

    // A source that ends at once: its opened() and finished() are queued but not yet handled when
    // stop() comes, and must not arrive after it.
    QSignalSpy opened(&grabber, &FrameGrabber::opened);
    grabber.start(std::make_unique<ScriptedSource>(
        [](int) {
          FrameRead r;
          r.status = FrameRead::Status::End;
          return r;
        },
        1));
    QThread::msleep(100);
    grabber.stop();
    QTest::qWait(50);
    QCOMPARE(opened.count(), 0);
    QCOMPARE(finished.count(), 0);
  }

  void restartReplacesTheRunningSource() {
    FrameGrabber grabber;
    QSignalSpy frames(&grabber, &FrameGrabber::frameReady);
    QSignalSpy opened(&grabber, &FrameGrabber::opened);
    grabber.start(std::make_unique<ScriptedSource>([](int) { return frame(solid(Qt::red)); }, 1));
    QTRY_VERIFY_WITH_TIMEOUT(frames.count() >= 2, 5000);
    grabber.start(std::make_unique<StillImageSource>(solid(Qt::blue), QStringLiteral("blue")));
    frames.clear();
    QTRY_VERIFY_WITH_TIMEOUT(frames.count() >= 2, 5000);
    for (const auto& args : frames) QCOMPARE(centre(args.at(0).value<QImage>()), QColor(Qt::blue));
    QCOMPARE(opened.last().at(0).toString(), QStringLiteral("blue"));
  }

  void stillImageIsDeliveredAsRgb() {
    FrameGrabber grabber;
    QSignalSpy frames(&grabber, &FrameGrabber::frameReady);
    QImage argb(10, 6, QImage::Format_ARGB32);
    argb.fill(QColor(10, 200, 30));
    grabber.start(std::make_unique<StillImageSource>(argb));
    QVERIFY(frames.wait(2000));
    const QImage got = frames.at(0).at(0).value<QImage>();
    QCOMPARE(got.format(), QImage::Format_RGB888);
    QCOMPARE(got.pixelColor(3, 3), QColor(10, 200, 30));

    QSignalSpy failed(&grabber, &FrameGrabber::failed);
    grabber.start(std::make_unique<StillImageSource>(QImage()));
    QVERIFY(failed.wait(2000));
  }

  // A driver call that does not come back (a camera in a bad state) must not freeze the GUI: stop()
  // gives up after a bounded wait and the reader finishes on its own later.
  void aStuckSourceIsAbandonedNotWaitedFor() {
    const int before = ScriptedSource::closed_or_destroyed;
    auto* grabber = new FrameGrabber;
    QSignalSpy frames(grabber, &FrameGrabber::frameReady);
    QSignalSpy lost(grabber, &FrameGrabber::sourceLost);
    grabber->start(std::make_unique<ScriptedSource>(
        [](int n) {
          if (n == 1) QThread::msleep(3000);
          return n == 1 ? failure(QStringLiteral("stuck")) : frame(counterImage(n));
        },
        5));
    QVERIFY(frames.wait(2000));
    QThread::msleep(50);  // into the stuck read
    QElapsedTimer clock;
    clock.start();
    grabber->stop();
    QVERIFY2(clock.elapsed() < 2600, qPrintable(QString::number(clock.elapsed())));
    QVERIFY(!grabber->isRunning());
    delete grabber;  // while the abandoned reader is still inside read()
    QCOMPARE(ScriptedSource::closed_or_destroyed - before, 0);
    // It returns, sees it was stopped, and closes its source on its own thread.
    QTRY_COMPARE_WITH_TIMEOUT(ScriptedSource::closed_or_destroyed - before, 1, 4000);
    QCOMPARE(lost.count(), 0);
  }

  void destructionWhileRunningOrOpeningIsClean() {
    const int before = ScriptedSource::closed_or_destroyed;
    {
      FrameGrabber grabber;
      QSignalSpy frames(&grabber, &FrameGrabber::frameReady);
      grabber.start(std::make_unique<VideoFileSource>(clip_, true));
      QVERIFY(frames.wait(2000));
    }
    {
      // Destroyed while the source is still opening on the grabber's thread.
      FrameGrabber grabber;
      grabber.start(
          std::make_unique<ScriptedSource>([](int n) { return frame(counterImage(n)); }, 1, 200));
      QThread::msleep(20);
    }
    {
      // Destroyed with deliveries queued and not yet taken.
      auto* grabber = new FrameGrabber;
      grabber->start(
          std::make_unique<ScriptedSource>([](int n) { return frame(counterImage(n)); }, 1));
      QThread::msleep(50);
      delete grabber;
      QCoreApplication::processEvents();
    }
    QCOMPARE(ScriptedSource::closed_or_destroyed - before, 2);
  }

 private:
  QTemporaryDir dir_;
  QString clip_;
};

QTEST_GUILESS_MAIN(TestFrameSource)
#include "test_frame_source.moc"
