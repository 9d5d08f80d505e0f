#include "frame_source.h"

#include <QElapsedTimer>
#include <QFile>
#include <QFileInfo>
#include <QMetaObject>
#include <QMutex>
#include <QMutexLocker>
#include <QThread>
#include <QTimer>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <atomic>
#include <cmath>
#include <exception>

#ifdef Q_OS_LINUX
#include <fcntl.h>
#include <linux/videodev2.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#endif

namespace mlmamba::ui {

namespace {

// Interval used for cameras: the driver's blocking read paces the stream, this only caps it so a
// 60 fps camera does not spend a core on frames no one can see.
constexpr int kCameraIntervalMs = 33;
// A video file whose header claims no rate or a silly one plays at this.
constexpr int kFallbackIntervalMs = 33;
// Some V4L2 drivers hand out a few empty buffers right after the stream starts.
constexpr int kFirstFrameAttempts = 5;
// A camera that opens but sends nothing blocks each read for OpenCV's V4L2 select timeout; retries
// stop once this much time has gone.
constexpr qint64 kFirstFrameBudgetMs = 3000;

std::string localPath(const QString& path) {
  return QFile::encodeName(path).toStdString();
}

// Converts straight into the QImage's own memory: one pass, no intermediate copy.
QImage toRgbImage(const cv::Mat& mat) {
  if (mat.empty() || mat.depth() != CV_8U) return {};
  int code = 0;
  switch (mat.channels()) {
    case 1:
      code = cv::COLOR_GRAY2RGB;
      break;
    case 3:
      code = cv::COLOR_BGR2RGB;
      break;
    case 4:
      code = cv::COLOR_BGRA2RGB;
      break;
    default:
      return {};
  }
  QImage image(mat.cols, mat.rows, QImage::Format_RGB888);
  if (image.isNull()) return {};
  cv::Mat view(mat.rows, mat.cols, CV_8UC3, image.bits(),
               static_cast<size_t>(image.bytesPerLine()));
  cv::cvtColor(mat, view, code);
  return image;
}

QString exceptionText(const std::exception& e) {
  return QString::fromLocal8Bit(e.what()).trimmed();
}

#ifdef Q_OS_LINUX
QString deviceFile(const QString& dir, int index) {
  return QStringLiteral("%1/video%2").arg(dir).arg(index);
}

// Capabilities of the node itself, not of the whole physical device (which includes its siblings).
quint32 nodeCapabilities(const v4l2_capability& cap) {
  return (cap.capabilities & V4L2_CAP_DEVICE_CAPS) ? cap.device_caps : cap.capabilities;
}

bool capturesVideo(quint32 caps) {
  return caps & (V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_VIDEO_CAPTURE_MPLANE);
}

QString driverName(int index) {
  QFile file(QStringLiteral("/sys/class/video4linux/video%1/name").arg(index));
  if (!file.open(QIODevice::ReadOnly)) return {};
  return QString::fromUtf8(file.readAll()).trimmed();
}

// Checked before OpenCV is asked: OpenCV reports every failure as "not opened" (and prints to
// stderr), while errno tells a missing camera from a forbidden or busy one.
bool checkCameraDevice(int index, QString* error) {
  const QString device = deviceFile(QStringLiteral("/dev"), index);
  if (!QFileInfo::exists(device)) {
    *error =
        QStringLiteral("No camera found at index %1 (%2 does not exist).").arg(index).arg(device);
    return false;
  }
  const int fd = ::open(QFile::encodeName(device).constData(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int code = errno;
    if (code == EACCES || code == EPERM) {
      *error = QStringLiteral(
                   "No permission to use camera %1 (%2). Add your user to the \"video\" group and "
                   "log in again.")
                   .arg(index)
                   .arg(device);
    } else if (code == EBUSY) {
      *error = QStringLiteral("Camera %1 is busy: another program is using it.").arg(index);
    } else if (code == ENOENT || code == ENODEV || code == ENXIO) {
      *error = QStringLiteral("No camera found at index %1 (%2 is not connected).")
                   .arg(index)
                   .arg(device);
    } else {
      *error = QStringLiteral("Camera %1 (%2) cannot be opened: %3.")
                   .arg(index)
                   .arg(device, QString::fromLocal8Bit(std::strerror(code)));
    }
    return false;
  }
  v4l2_capability cap{};
  const bool queried = ::ioctl(fd, VIDIOC_QUERYCAP, &cap) == 0;
  ::close(fd);
  if (queried && !capturesVideo(nodeCapabilities(cap))) {
    *error = QStringLiteral(
                 "%1 is not a camera picture stream (many webcams add such a node beside the real "
                 "one); try another camera.")
                 .arg(device);
    return false;
  }
  return true;
}
#endif

}  // namespace

// ---------------------------------------------------------------------------------------------

struct CameraSource::Capture {
  cv::VideoCapture cap;
};

CameraSource::CameraSource(int index) : index_(index) {}

CameraSource::~CameraSource() {
  CameraSource::close();
}

QString CameraSource::description() const {
  return QStringLiteral("Camera %1").arg(index_);
}

bool CameraSource::open(QString* error) {
  if (index_ < 0) {
    *error = QStringLiteral("No camera found at index %1.").arg(index_);
    return false;
  }
#ifdef Q_OS_LINUX
  if (!checkCameraDevice(index_, error)) return false;
#endif
  capture_ = std::make_unique<Capture>();
  try {
    if (!capture_->cap.open(index_, cv::CAP_V4L2)) capture_->cap.open(index_, cv::CAP_ANY);
  } catch (const std::exception& e) {
    capture_.reset();
    *error = QStringLiteral("Camera %1 cannot be opened: %2").arg(index_).arg(exceptionText(e));
    return false;
  }
  if (!capture_->cap.isOpened()) {
    capture_.reset();
#ifdef Q_OS_LINUX
    *error = QStringLiteral("Camera %1 cannot be started; it may be busy in another program.")
                 .arg(index_);
#else
    *error = QStringLiteral("No camera found at index %1, or it is busy in another program.")
                 .arg(index_);
#endif
    return false;
  }
  // A camera held by another program often opens fine and then never delivers a frame.
  QElapsedTimer clock;
  clock.start();
  for (int attempt = 0;
       attempt < kFirstFrameAttempts && first_.isNull() && clock.elapsed() < kFirstFrameBudgetMs;
       ++attempt) {
    const FrameRead r = read();
    if (r.status == FrameRead::Status::Frame) first_ = r.image;
  }
  if (first_.isNull()) {
    close();
    *error =
        QStringLiteral("Camera %1 opened but sends no picture; it may be busy in another program.")
            .arg(index_);
    return false;
  }
  return true;
}

FrameRead CameraSource::read() {
  FrameRead r;
  if (!first_.isNull()) {
    r.status = FrameRead::Status::Frame;
    r.image = std::move(first_);
    first_ = QImage();
    return r;
  }
  if (!capture_) {
    r.error = QStringLiteral("Camera %1 is not open.").arg(index_);
    return r;
  }
  cv::Mat mat;
  try {
    if (capture_->cap.read(mat)) r.image = toRgbImage(mat);
  } catch (const std::exception& e) {
    r.error = QStringLiteral("Camera %1 failed: %2").arg(index_).arg(exceptionText(e));
    return r;
  }
  if (!r.image.isNull()) {
    r.status = FrameRead::Status::Frame;
    return r;
  }
#ifdef Q_OS_LINUX
  if (!QFileInfo::exists(deviceFile(QStringLiteral("/dev"), index_))) {
    r.error = QStringLiteral("Camera %1 was disconnected.").arg(index_);
    return r;
  }
#endif
  r.error =
      QStringLiteral("Camera %1 stopped sending pictures; it may have been unplugged.").arg(index_);
  return r;
}

int CameraSource::frameIntervalMs() const {
  return kCameraIntervalMs;
}

void CameraSource::close() {
  first_ = QImage();
  if (!capture_) return;
  try {
    capture_->cap.release();
  } catch (const std::exception&) {
    // Releasing a device that vanished can throw; it is gone either way.
  }
  capture_.reset();
}

// ---------------------------------------------------------------------------------------------

struct VideoFileSource::Capture {
  cv::VideoCapture cap;
  cv::Mat first;  // read during open() so that an empty or unreadable file fails there
  qint64 frames_since_start = 0;
};

VideoFileSource::VideoFileSource(const QString& path, bool loop) : path_(path), loop_(loop) {}

VideoFileSource::~VideoFileSource() {
  VideoFileSource::close();
}

QString VideoFileSource::description() const {
  return QFileInfo(path_).fileName();
}

bool VideoFileSource::open(QString* error) {
  const QFileInfo info(path_);
  if (!info.isFile()) {
    *error = QStringLiteral("Video file not found: %1").arg(path_);
    return false;
  }
  if (!info.isReadable()) {
    *error = QStringLiteral("No permission to read the video file %1").arg(path_);
    return false;
  }
  auto capture = std::make_unique<Capture>();
  try {
    if (capture->cap.open(localPath(path_), cv::CAP_ANY)) capture->cap.read(capture->first);
  } catch (const std::exception& e) {
    *error = QStringLiteral("Cannot play %1: %2").arg(info.fileName(), exceptionText(e));
    return false;
  }
  if (!capture->cap.isOpened()) {
    *error =
        QStringLiteral("Cannot play %1: it is not a video this program can read, or it is damaged.")
            .arg(info.fileName());
    return false;
  }
  if (capture->first.empty()) {
    *error = QStringLiteral("%1 contains no frames that can be read.").arg(info.fileName());
    return false;
  }
  const double fps = capture->cap.get(cv::CAP_PROP_FPS);
  interval_ms_ = (std::isfinite(fps) && fps >= 1 && fps <= 240)
                     ? static_cast<int>(std::lround(1000.0 / fps))
                     : kFallbackIntervalMs;
  capture_ = std::move(capture);
  return true;
}

FrameRead VideoFileSource::read() {
  FrameRead r;
  if (!capture_) {
    r.error = QStringLiteral("%1 is not open.").arg(description());
    return r;
  }
  cv::Mat mat;
  try {
    if (!capture_->first.empty()) {
      mat = capture_->first;
      capture_->first.release();
    } else if (!capture_->cap.read(mat) && loop_ && capture_->frames_since_start > 0) {
      // Reopening rather than seeking to frame 0: seeking is not exact with every backend.
      capture_->cap.release();
      capture_->frames_since_start = 0;
      if (capture_->cap.open(localPath(path_), cv::CAP_ANY)) capture_->cap.read(mat);
      if (mat.empty()) {
        r.error = QStringLiteral("%1 could not be played again from the start.").arg(description());
        return r;
      }
    }
  } catch (const std::exception& e) {
    r.error = QStringLiteral("%1 could not be read: %2").arg(description(), exceptionText(e));
    return r;
  }
  if (mat.empty()) {
    // OpenCV reports the end of a file and a damaged frame alike; treated as the end, which is
    // what it nearly always is.
    r.status = FrameRead::Status::End;
    return r;
  }
  r.image = toRgbImage(mat);
  if (r.image.isNull()) {
    r.error = QStringLiteral("%1 has frames in a pixel format this program cannot show.")
                  .arg(description());
    return r;
  }
  ++capture_->frames_since_start;
  r.status = FrameRead::Status::Frame;
  return r;
}

int VideoFileSource::frameIntervalMs() const {
  return interval_ms_;
}

void VideoFileSource::close() {
  if (!capture_) return;
  try {
    capture_->cap.release();
  } catch (const std::exception&) {
    // Nothing useful to do when releasing a file fails.
  }
  capture_.reset();
}

// ---------------------------------------------------------------------------------------------

StillImageSource::StillImageSource(const QImage& image, QString description)
    : image_(image), description_(std::move(description)) {}

bool StillImageSource::open(QString* error) {
  if (image_.isNull()) {
    *error = QStringLiteral("There is no picture to show.");
    return false;
  }
  image_ = image_.convertToFormat(QImage::Format_RGB888);
  return true;
}

FrameRead StillImageSource::read() {
  FrameRead r;
  r.status = FrameRead::Status::Frame;
  r.image = image_;
  return r;
}

// ---------------------------------------------------------------------------------------------

QVector<CameraInfo> listCameras(int probeCount, const QString& deviceDir) {
  QVector<CameraInfo> cameras;
#ifdef Q_OS_LINUX
  for (int index = 0; index < probeCount; ++index) {
    const QString device = deviceFile(deviceDir, index);
    if (!QFileInfo::exists(device)) continue;
    CameraInfo info;
    info.index = index;
    info.device = device;
    if (deviceDir == QStringLiteral("/dev")) info.name = driverName(index);
    // O_NONBLOCK and QUERYCAP only: no format is set and no stream started, so a camera that is
    // busy or slow to wake up cannot stall the listing.
    const int fd = ::open(QFile::encodeName(device).constData(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
      v4l2_capability cap{};
      const bool queried = ::ioctl(fd, VIDIOC_QUERYCAP, &cap) == 0;
      ::close(fd);
      if (!queried || !capturesVideo(nodeCapabilities(cap))) continue;
      if (info.name.isEmpty()) {
        info.name =
            QString::fromUtf8(reinterpret_cast<const char*>(cap.card),
                              qstrnlen(reinterpret_cast<const char*>(cap.card), sizeof(cap.card)))
                .trimmed();
      }
    }
    // A node that cannot be opened (busy, no permission) is still listed: starting it then says
    // exactly why it does not work, which is more useful than a camera that is silently missing.
    if (info.name.isEmpty()) info.name = QStringLiteral("Camera %1").arg(index);
    cameras.push_back(info);
  }
#else
  Q_UNUSED(deviceDir);
  // Without device files the only test is opening the camera, which takes up to a second each.
  for (int index = 0; index < qMin(probeCount, 2); ++index) {
    try {
      cv::VideoCapture cap(index, cv::CAP_ANY);
      if (!cap.isOpened()) continue;
    } catch (const std::exception&) {
      continue;
    }
    cameras.push_back({index, QStringLiteral("Camera %1").arg(index), QString()});
  }
#endif
  return cameras;
}

bool writeVideoFile(const QString& path, const QVector<QImage>& frames, double fps,
                    QString* error) {
  if (frames.isEmpty() || frames.front().isNull()) {
    *error = QStringLiteral("No frames to write.");
    return false;
  }
  const QSize size = frames.front().size();
  for (const QImage& frame : frames) {
    if (frame.size() != size) {
      *error = QStringLiteral("Frames of a video must all have the same size.");
      return false;
    }
  }
  const int fourcc = cv::VideoWriter::fourcc('M', 'J', 'P', 'G');
  const cv::Size cv_size(size.width(), size.height());
  try {
    cv::VideoWriter writer;
    // OpenCV's own Motion-JPEG writer exists in every build; FFmpeg is only the fallback.
    if (!writer.open(localPath(path), cv::CAP_OPENCV_MJPEG, fourcc, fps, cv_size, true) &&
        !writer.open(localPath(path), cv::CAP_ANY, fourcc, fps, cv_size, true)) {
      *error = QStringLiteral("Cannot write the video file %1").arg(path);
      return false;
    }
    cv::Mat bgr;
    for (const QImage& frame : frames) {
      const QImage rgb = frame.convertToFormat(QImage::Format_RGB888);
      const cv::Mat view(rgb.height(), rgb.width(), CV_8UC3, const_cast<uchar*>(rgb.constBits()),
                         static_cast<size_t>(rgb.bytesPerLine()));
      cv::cvtColor(view, bgr, cv::COLOR_RGB2BGR);
      writer.write(bgr);
    }
    writer.release();
  } catch (const std::exception& e) {
    *error = QStringLiteral("Cannot write the video file %1: %2").arg(path, exceptionText(e));
    return false;
  }
  if (QFileInfo(path).size() <= 0) {
    *error = QStringLiteral("Writing the video file %1 produced nothing.").arg(path);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------

namespace {
enum Outcome { kOpened, kFailed, kLost, kFinished };

// Long enough for any healthy source to finish its current read or open; a V4L2 read on a camera
// that stopped answering can block for OpenCV's select timeout (10 s), which the GUI must not wait.
constexpr unsigned long kJoinTimeoutMs = 2000;
}  // namespace

struct FrameGrabber::Run {
  QMutex mutex;
  FrameGrabber* owner = nullptr;  // null once the grabber has let go of this run
  QImage pending;                 // at most one frame waits for the GUI
  bool fetch_queued = false;      // and at most one queued call fetches it
  qint64 dropped = 0;
  std::atomic<bool> stop{false};
};

// Lives on the grabber's thread; talks back only through queued calls on the grabber, and is
// deleted on its own thread when that thread finishes (so the source is closed where it was
// opened).
class FrameGrabber::Worker : public QObject {
 public:
  Worker(std::shared_ptr<Run> run, std::unique_ptr<FrameSource> source, quint64 generation,
         int failures_before_lost)
      : run_(std::move(run)),
        source_(std::move(source)),
        generation_(generation),
        failures_before_lost_(failures_before_lost) {}

  ~Worker() override {
    delete timer_;
    if (opened_) source_->close();
  }

  void begin() {
    if (run_->stop) return;
    QString error;
    bool ok = false;
    try {
      ok = source_->open(&error);
    } catch (const std::exception& e) {
      error = exceptionText(e);
    }
    if (!ok) {
      if (error.isEmpty())
        error = QStringLiteral("%1 cannot be opened.").arg(source_->description());
      post(kFailed, error);
      return;
    }
    opened_ = true;
    post(kOpened, source_->description());
    timer_ = new QTimer;
    // Coarse timers may fire up to 5% late, which would slow a video file down.
    timer_->setTimerType(Qt::PreciseTimer);
    timer_->setInterval(qMax(1, source_->frameIntervalMs()));
    QObject::connect(timer_, &QTimer::timeout, this, [this] { tick(); });
    timer_->start();
    tick();
  }

 private:
  void tick() {
    if (done_ || run_->stop) return;
    FrameRead r;
    try {
      r = source_->read();
    } catch (const std::exception& e) {
      r.status = FrameRead::Status::Failed;
      r.error = exceptionText(e);
    }
    switch (r.status) {
      case FrameRead::Status::Frame:
        failures_ = 0;
        deliver(std::move(r.image));
        break;
      case FrameRead::Status::End:
        finish(kFinished, QString());
        break;
      case FrameRead::Status::Failed:
        if (++failures_ >= failures_before_lost_) {
          if (r.error.isEmpty()) {
            r.error = QStringLiteral("%1 stopped sending pictures.").arg(source_->description());
          }
          finish(kLost, r.error);
        }
        break;
    }
  }

  void deliver(QImage image) {
    QMutexLocker lock(&run_->mutex);
    if (!run_->pending.isNull()) ++run_->dropped;
    run_->pending = std::move(image);
    if (run_->fetch_queued || !run_->owner) return;
    run_->fetch_queued = true;
    FrameGrabber* owner = run_->owner;
    const quint64 generation = generation_;
    QMetaObject::invokeMethod(
        owner, [owner, generation] { owner->takeFrame(generation); }, Qt::QueuedConnection);
  }

  void finish(Outcome outcome, const QString& message) {
    done_ = true;
    timer_->stop();
    post(outcome, message);
  }

  // Under the run's lock, so the grabber cannot be destroyed between the check and the call.
  void post(Outcome outcome, const QString& message) {
    QMutexLocker lock(&run_->mutex);
    if (!run_->owner) return;
    FrameGrabber* owner = run_->owner;
    const quint64 generation = generation_;
    QMetaObject::invokeMethod(
        owner,
        [owner, generation, outcome, message] { owner->endWith(generation, outcome, message); },
        Qt::QueuedConnection);
  }

  std::shared_ptr<Run> run_;
  std::unique_ptr<FrameSource> source_;
  quint64 generation_;
  int failures_before_lost_;
  QTimer* timer_ = nullptr;
  bool opened_ = false;
  bool done_ = false;
  int failures_ = 0;
};

FrameGrabber::FrameGrabber(QObject* parent) : QObject(parent) {}

FrameGrabber::~FrameGrabber() {
  joinThread();
}

void FrameGrabber::start(std::unique_ptr<FrameSource> source) {
  joinThread();
  if (!source) return;
  ++generation_;
  latest_ = QImage();
  delivered_ = 0;
  run_ = std::make_shared<Run>();
  run_->owner = this;
  thread_ = new QThread;
  thread_->setObjectName(QStringLiteral("frame grabber"));
  auto* worker = new Worker(run_, std::move(source), generation_, failures_before_lost_);
  worker->moveToThread(thread_);
  connect(thread_, &QThread::started, worker, [worker] { worker->begin(); });
  connect(thread_, &QThread::finished, worker, &QObject::deleteLater);
  // Only matters for a thread abandoned by joinThread(): a joined one is deleted there, which also
  // drops this queued deletion.
  connect(thread_, &QThread::finished, thread_, &QObject::deleteLater);
  thread_->start();
}

void FrameGrabber::stop() {
  joinThread();
}

qint64 FrameGrabber::framesDropped() const {
  if (!run_) return 0;
  QMutexLocker lock(&run_->mutex);
  return run_->dropped;
}

void FrameGrabber::takeFrame(quint64 generation) {
  if (generation != generation_ || !run_) return;
  QImage frame;
  {
    QMutexLocker lock(&run_->mutex);
    frame = std::move(run_->pending);
    run_->pending = QImage();
    run_->fetch_queued = false;
  }
  if (frame.isNull()) return;
  latest_ = frame;
  ++delivered_;
  emit frameReady(frame);
}

void FrameGrabber::endWith(quint64 generation, int outcome, const QString& message) {
  if (generation != generation_) return;
  if (outcome == kOpened) {
    emit opened(message);
    return;
  }
  joinThread();
  switch (outcome) {
    case kFailed:
      emit failed(message);
      break;
    case kLost:
      emit sourceLost(message);
      break;
    case kFinished:
      emit finished();
      break;
    default:
      break;
  }
}

void FrameGrabber::joinThread() {
  if (!thread_) return;
  run_->stop = true;
  thread_->quit();
  {
    // From here on the reader posts nothing to this grabber, even if it is still running.
    QMutexLocker lock(&run_->mutex);
    run_->owner = nullptr;
    run_->pending = QImage();
    run_->fetch_queued = false;
  }
  if (thread_->wait(kJoinTimeoutMs)) {
    // The worker deleted itself on its thread as the thread finished.
    delete thread_;
  } else {
    qWarning("Frame source did not stop within %lu ms; leaving it to finish on its own",
             kJoinTimeoutMs);
  }
  thread_ = nullptr;
  ++generation_;
}

}  // namespace mlmamba::ui
