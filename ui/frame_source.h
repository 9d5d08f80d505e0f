// Where webcam-panel pictures come from: a camera, a video file standing in for one, or a still
// picture; and the grabber that reads a source on a thread of its own and hands the newest frame to
// the GUI. OpenCV stays inside frame_source.cpp: nothing here needs its headers.
#pragma once

#include <QImage>
#include <QObject>
#include <QString>
#include <QVector>

#include <memory>

class QThread;

namespace mlmamba::ui {

// One read from a source.
struct FrameRead {
  enum class Status {
    Frame,   // `image` holds the next picture, Format_RGB888
    End,     // a video file has no more frames
    Failed,  // this read did not work; `error` says why (the grabber decides when that means lost)
  };
  Status status = Status::Failed;
  QImage image;
  QString error;
};

// Opened, read and closed on the grabber's thread only; constructed anywhere (construction does no
// I/O, so the GUI can build one without waiting on a device).
class FrameSource {
 public:
  virtual ~FrameSource() = default;

  // For messages: "Camera 0", "clip.avi".
  virtual QString description() const = 0;
  // False with a sentence for the person in `error` when the source cannot deliver frames.
  [[nodiscard]] virtual bool open(QString* error) = 0;
  virtual FrameRead read() = 0;
  // How often the grabber asks for a frame.
  virtual int frameIntervalMs() const = 0;
  virtual void close() {}
};

// A camera by its index (/dev/videoN on Linux). V4L2 first, then whatever backend OpenCV has.
class CameraSource : public FrameSource {
 public:
  explicit CameraSource(int index);
  ~CameraSource() override;

  QString description() const override;
  [[nodiscard]] bool open(QString* error) override;
  FrameRead read() override;
  int frameIntervalMs() const override;
  void close() override;

 private:
  struct Capture;
  int index_;
  std::unique_ptr<Capture> capture_;
  QImage first_;  // read during open() to tell a camera that opens but sends nothing
};

// A video file read at its own frame rate; at the end either ends or starts again.
class VideoFileSource : public FrameSource {
 public:
  explicit VideoFileSource(const QString& path, bool loop = false);
  ~VideoFileSource() override;

  QString description() const override;
  [[nodiscard]] bool open(QString* error) override;
  FrameRead read() override;
  int frameIntervalMs() const override;
  void close() override;

 private:
  struct Capture;
  QString path_;
  bool loop_;
  std::unique_ptr<Capture> capture_;
  int interval_ms_ = 33;
};

// The same picture again and again, so a listener that arrives late still gets it.
class StillImageSource : public FrameSource {
 public:
  explicit StillImageSource(const QImage& image, QString description = QStringLiteral("Picture"));

  QString description() const override { return description_; }
  [[nodiscard]] bool open(QString* error) override;
  FrameRead read() override;
  int frameIntervalMs() const override { return 200; }

 private:
  QImage image_;
  QString description_;
};

struct CameraInfo {
  int index = -1;
  QString name;    // from the driver where it says, else "Camera N"
  QString device;  // "/dev/video0"; empty where there is no device file
};

// Capture devices among the first `probeCount` indices. On Linux it looks at /dev/videoN and asks
// the driver for its capabilities without starting a stream, so it returns at once with no camera
// and skips the metadata nodes many webcams add beside their capture node. `deviceDir` exists for
// tests.
QVector<CameraInfo> listCameras(int probeCount = 10,
                                const QString& deviceDir = QStringLiteral("/dev"));

// Writes `frames` (all one size) as a Motion-JPEG .avi, the format VideoFileSource replays: a
// recorded clip can then stand in for a camera. False with the reason in `error` when it fails.
[[nodiscard]] bool writeVideoFile(const QString& path, const QVector<QImage>& frames, double fps,
                                  QString* error);

// Runs one source on a thread of its own. Controlled from the thread that created it (the GUI);
// every signal is emitted on that thread. Frames are not queued: the reader keeps only the newest
// frame, and while the GUI has not taken the last one it overwrites it (a dropped frame), so a slow
// GUI sees fewer but current frames and memory stays bounded.
class FrameGrabber : public QObject {
  Q_OBJECT

 public:
  explicit FrameGrabber(QObject* parent = nullptr);
  ~FrameGrabber() override;  // stops and joins

  // Stops any source already running, then opens `source` on a new thread. The outcome arrives as
  // opened() or failed().
  void start(std::unique_ptr<FrameSource> source);
  // Joins the thread before returning; emits nothing, and no signal of the stopped source arrives
  // afterwards. Safe to call when not running. A source stuck inside its driver for more than a
  // couple of seconds is left to finish on its own rather than freezing the GUI.
  void stop();
  bool isRunning() const { return thread_ != nullptr; }

  QImage latestFrame() const { return latest_; }
  qint64 framesDelivered() const { return delivered_; }
  qint64 framesDropped() const;

  // Consecutive failed reads before the source counts as lost. A camera that is pulled out fails
  // every read, while a single bad frame from a flaky USB link should not end the stream.
  void setFailuresBeforeLost(int count) { failures_before_lost_ = count > 0 ? count : 1; }
  int failuresBeforeLost() const { return failures_before_lost_; }

 signals:
  void opened(const QString& description);
  void frameReady(const QImage& frame);
  // The source could not be opened; the grabber is stopped again.
  void failed(const QString& message);
  // Reads kept failing after frames had come (an unplugged camera); the grabber is stopped.
  void sourceLost(const QString& reason);
  // A video file (not looping) reached its end; the grabber is stopped.
  void finished();

 private:
  class Worker;
  struct Run;

  void takeFrame(quint64 generation);
  void endWith(quint64 generation, int outcome, const QString& message);
  void joinThread();

  QThread* thread_ = nullptr;
  // What the GUI and the reader of the current (or last) run share. The reader holds it too, so a
  // reader stuck in a driver call can be abandoned without leaving it a dangling grabber.
  std::shared_ptr<Run> run_;
  // Queued calls carry the generation they were made for; a stop or restart makes older ones stale.
  quint64 generation_ = 0;
  QImage latest_;
  qint64 delivered_ = 0;
  int failures_before_lost_ = 10;
};

}  // namespace mlmamba::ui
