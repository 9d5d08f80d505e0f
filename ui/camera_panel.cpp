#include "camera_panel.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QLocale>
#include <QPainter>
#include <QPushButton>
#include <QSignalBlocker>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTimer>
#include <QVBoxLayout>

namespace mlmamba::ui {

namespace {
constexpr int kKindRole = Qt::UserRole;
constexpr int kValueRole = Qt::UserRole + 1;
// The settings accept 1 s to an hour (see setting::cameraIntervalSeconds).
constexpr int kMinIntervalSeconds = 1;
constexpr int kMaxIntervalSeconds = 3600;

QString clockTime(const QDateTime& t) {
  return QLocale().toString(t.time(), QLocale::LongFormat);
}
}  // namespace

// Paints the frame scaled to fit, keeping its aspect, or a message while there is none. Painting
// rather than a QLabel pixmap keeps the widget's size independent of the frame's, so a large camera
// cannot push the window wider.
class CameraPreview : public QWidget {
 public:
  explicit CameraPreview(QWidget* parent) : QWidget(parent) {
    setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Expanding);
    setAttribute(Qt::WA_OpaquePaintEvent);
  }

  void setImage(const QImage& image) {
    image_ = image;
    update();
  }
  void setMessage(const QString& message) {
    message_ = message;
    setAccessibleDescription(message);
    update();
  }

  QSize sizeHint() const override { return {480, 360}; }
  QSize minimumSizeHint() const override { return {160, 120}; }

 protected:
  void paintEvent(QPaintEvent*) override {
    QPainter painter(this);
    painter.fillRect(rect(), QColor(24, 24, 24));
    if (!image_.isNull()) {
      const QSize fitted = image_.size().scaled(size(), Qt::KeepAspectRatio);
      QRect target(QPoint(0, 0), fitted);
      target.moveCenter(rect().center());
      painter.setRenderHint(QPainter::SmoothPixmapTransform);
      painter.drawImage(target, image_);
    }
    if (!message_.isEmpty()) {
      // Over a frame (a lost camera's last picture) the text gets a band so it stays readable.
      const QRect band = image_.isNull() ? rect() : QRect(0, height() - 48, width(), 48);
      if (!image_.isNull()) painter.fillRect(band, QColor(0, 0, 0, 160));
      painter.setPen(QColor(235, 235, 235));
      painter.drawText(band.adjusted(12, 4, -12, -4), Qt::AlignCenter | Qt::TextWordWrap, message_);
    }
  }

 private:
  QImage image_;
  QString message_;
};

CameraPanel::CameraPanel(int liveIntervalSeconds, QWidget* parent)
    : QWidget(parent), grabber_(new FrameGrabber(this)), live_timer_(new QTimer(this)) {
  buildUi(liveIntervalSeconds);

  connect(grabber_, &FrameGrabber::opened, this, &CameraPanel::onOpened);
  connect(grabber_, &FrameGrabber::frameReady, this, &CameraPanel::onFrame);
  connect(grabber_, &FrameGrabber::failed, this, &CameraPanel::onFailed);
  connect(grabber_, &FrameGrabber::sourceLost, this, &CameraPanel::onLost);
  connect(grabber_, &FrameGrabber::finished, this, &CameraPanel::onFinished);
  connect(live_timer_, &QTimer::timeout, this, &CameraPanel::liveTick);

  refreshCameras();
}

CameraPanel::~CameraPanel() {
  live_timer_->stop();
  // Joined here, while the widgets its signals would touch still exist.
  grabber_->disconnect(this);
  grabber_->stop();
}

void CameraPanel::buildUi(int liveIntervalSeconds) {
  auto* source_label = new QLabel(tr("&Source:"), this);
  source_combo_ = new QComboBox(this);
  source_combo_->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
  source_combo_->setMinimumContentsLength(16);
  source_combo_->setAccessibleName(tr("Picture source"));
  source_combo_->setToolTip(tr("A camera, a video file standing in for one, or nothing"));
  source_label->setBuddy(source_combo_);

  refresh_button_ = new QPushButton(tr("Refresh"), this);
  refresh_button_->setAccessibleName(tr("Look for cameras again"));
  refresh_button_->setToolTip(tr("Look for cameras again, after plugging one in"));

  loop_check_ = new QCheckBox(tr("Loop"), this);
  loop_check_->setAccessibleName(tr("Loop the video file"));
  loop_check_->setToolTip(tr("Play a video file again from the start when it ends"));
  loop_check_->setChecked(true);

  start_button_ = new QPushButton(tr("Start"), this);
  start_button_->setAccessibleName(tr("Start preview"));

  preview_ = new CameraPreview(this);
  preview_->setAccessibleName(tr("Camera preview"));

  status_label_ = new QLabel(this);
  status_label_->setWordWrap(true);
  status_label_->setAccessibleName(tr("Camera status"));
  status_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);

  capture_button_ = new QPushButton(tr("Capture frame"), this);
  capture_button_->setAccessibleName(tr("Capture frame"));
  capture_button_->setToolTip(tr("Attach the frame shown now to the message being written"));

  auto* live_box = new QGroupBox(tr("Live mode"), this);
  question_edit_ = new QLineEdit(live_box);
  question_edit_->setPlaceholderText(tr("Question to ask about each new frame"));
  question_edit_->setAccessibleName(tr("Live question"));
  question_edit_->setClearButtonEnabled(true);

  live_check_ = new QCheckBox(tr("Ask every"), live_box);
  live_check_->setAccessibleName(tr("Live mode"));
  live_check_->setToolTip(
      tr("Ask the question about the newest frame at this interval; a new question waits until the "
         "previous one is answered"));

  interval_spin_ = new QSpinBox(live_box);
  interval_spin_->setRange(kMinIntervalSeconds, kMaxIntervalSeconds);
  interval_spin_->setSuffix(tr(" s"));
  interval_spin_->setAccessibleName(tr("Live interval in seconds"));
  const int seconds = qBound(kMinIntervalSeconds, liveIntervalSeconds, kMaxIntervalSeconds);
  interval_spin_->setValue(seconds);
  live_interval_ = std::chrono::seconds(seconds);
  live_timer_->setInterval(live_interval_);

  live_status_label_ = new QLabel(live_box);
  live_status_label_->setWordWrap(true);
  live_status_label_->setAccessibleName(tr("Live mode status"));

  answer_time_label_ = new QLabel(live_box);
  answer_time_label_->setAccessibleName(tr("Time of the latest live answer"));
  QFont small = answer_time_label_->font();
  small.setPointSizeF(small.pointSizeF() * 0.9);
  answer_time_label_->setFont(small);

  answer_label_ = new QLabel(live_box);
  answer_label_->setWordWrap(true);
  answer_label_->setTextFormat(Qt::PlainText);
  answer_label_->setTextInteractionFlags(Qt::TextSelectableByMouse | Qt::TextSelectableByKeyboard);
  answer_label_->setAccessibleName(tr("Latest live answer"));
  answer_label_->setMinimumHeight(answer_label_->fontMetrics().lineSpacing() * 2);
  answer_label_->setAlignment(Qt::AlignTop | Qt::AlignLeft);

  auto* source_row = new QHBoxLayout;
  source_row->addWidget(source_label);
  source_row->addWidget(source_combo_, 1);
  source_row->addWidget(refresh_button_);
  source_row->addWidget(loop_check_);
  source_row->addWidget(start_button_);

  auto* capture_row = new QHBoxLayout;
  capture_row->addWidget(status_label_, 1);
  capture_row->addWidget(capture_button_, 0, Qt::AlignTop);

  auto* interval_row = new QHBoxLayout;
  interval_row->addWidget(live_check_);
  interval_row->addWidget(interval_spin_);
  interval_row->addWidget(live_status_label_, 1);

  auto* live_layout = new QVBoxLayout(live_box);
  live_layout->addWidget(question_edit_);
  live_layout->addLayout(interval_row);
  live_layout->addWidget(answer_time_label_);
  live_layout->addWidget(answer_label_);

  auto* layout = new QVBoxLayout(this);
  layout->addLayout(source_row);
  layout->addWidget(preview_, 1);
  layout->addLayout(capture_row);
  layout->addWidget(live_box);

  connect(source_combo_, &QComboBox::activated, this, &CameraPanel::onSourceActivated);
  connect(refresh_button_, &QPushButton::clicked, this, &CameraPanel::refreshCameras);
  connect(start_button_, &QPushButton::clicked, this, &CameraPanel::onStartStop);
  connect(capture_button_, &QPushButton::clicked, this, &CameraPanel::captureFrame);
  connect(live_check_, &QCheckBox::toggled, this, &CameraPanel::setLiveMode);
  connect(question_edit_, &QLineEdit::textChanged, this, [this] { updateControls(); });
  connect(interval_spin_, &QSpinBox::valueChanged, this, [this](int value) {
    live_interval_ = std::chrono::seconds(value);
    live_timer_->setInterval(live_interval_);
    emit liveIntervalChanged(value);
  });

  setLiveStatus(tr("Off"));
}

void CameraPanel::addEntry(const QString& text, Entry kind, const QVariant& value) {
  source_combo_->addItem(text);
  const int row = source_combo_->count() - 1;
  source_combo_->setItemData(row, static_cast<int>(kind), kKindRole);
  source_combo_->setItemData(row, value, kValueRole);
}

CameraPanel::Entry CameraPanel::entryKind(int row) const {
  if (row < 0) return Entry::None;
  return static_cast<Entry>(source_combo_->itemData(row, kKindRole).toInt());
}

void CameraPanel::refreshCameras() {
  setCameras(listCameras());
}

void CameraPanel::setCameras(const QVector<CameraInfo>& cameras) {
  const int row = source_combo_->currentIndex();
  const Entry kind = entryKind(row);
  const QVariant value = row >= 0 ? source_combo_->itemData(row, kValueRole) : QVariant();

  cameras_ = cameras;
  const QSignalBlocker block(source_combo_);
  source_combo_->clear();
  for (const CameraInfo& camera : cameras_) {
    const QString text = camera.name == tr("Camera %1").arg(camera.index)
                             ? camera.name
                             : tr("Camera %1: %2").arg(camera.index).arg(camera.name);
    addEntry(text, Entry::Camera, camera.index);
  }
  if (!video_file_.isEmpty()) {
    addEntry(QFileInfo(video_file_).fileName(), Entry::File, video_file_);
    source_combo_->setItemData(source_combo_->count() - 1, video_file_, Qt::ToolTipRole);
  }
  addEntry(tr("Video file…"), Entry::ChooseFile, QVariant());
  addEntry(tr("None"), Entry::None, QVariant());

  // Keep what was chosen when it is still there; else the preferred camera, any camera, the file.
  int select = -1;
  if (kind == Entry::Camera || kind == Entry::File) {
    for (int i = 0; i < source_combo_->count() && select < 0; ++i) {
      if (entryKind(i) == kind && source_combo_->itemData(i, kValueRole) == value) select = i;
    }
  }
  // "None" stays only when the person picked it; as a mere default it gives way to a new camera.
  if (select < 0 && (kind != Entry::None || !none_chosen_)) {
    for (int i = 0; i < cameras_.size() && select < 0; ++i) {
      if (cameras_[i].index == preferred_camera_) select = i;
    }
    if (select < 0 && !cameras_.isEmpty()) select = 0;
  }
  if (select < 0 && kind == Entry::File && !video_file_.isEmpty()) select = cameras_.size();
  if (select < 0) select = source_combo_->count() - 1;  // None
  source_combo_->setCurrentIndex(select);

  if (!isRunning()) {
    if (cameras_.isEmpty()) {
      setStatus(
          tr("No camera found. Choose \"Video file…\" to play a recording, or plug in a camera "
             "and press Refresh."));
    } else {
      setStatus(
          cameras_.size() == 1
              ? tr("1 camera found. Press Start to see it.")
              : tr("%1 cameras found. Press Start to see the chosen one.").arg(cameras_.size()));
    }
    if (newest_.isNull()) preview_->setMessage(tr("No picture"));
  }
  updateControls();
}

void CameraPanel::setPreferredCamera(int index) {
  preferred_camera_ = index;
  for (int i = 0; i < source_combo_->count(); ++i) {
    if (entryKind(i) == Entry::Camera && source_combo_->itemData(i, kValueRole).toInt() == index) {
      source_combo_->setCurrentIndex(i);
      break;
    }
  }
  updateControls();
}

void CameraPanel::setVideoFile(const QString& path) {
  video_file_ = path;
  setCameras(cameras_);
  for (int i = 0; i < source_combo_->count(); ++i) {
    if (entryKind(i) == Entry::File) source_combo_->setCurrentIndex(i);
  }
  if (!isRunning()) setStatus(tr("Press Start to play %1.").arg(QFileInfo(path).fileName()));
  updateControls();
}

void CameraPanel::onSourceActivated(int row) {
  none_chosen_ = entryKind(row) == Entry::None;
  switch (entryKind(row)) {
    case Entry::ChooseFile:
      chooseVideoFile();
      return;
    case Entry::None:
      stop();
      break;
    case Entry::Camera:
    case Entry::File:
      // Switching while something plays switches the preview too; otherwise Start does it.
      if (isRunning()) startSelected();
      break;
  }
  last_row_ = source_combo_->currentIndex();
  updateControls();
}

void CameraPanel::chooseVideoFile() {
  QString folder = video_file_.isEmpty()
                       ? QStandardPaths::writableLocation(QStandardPaths::MoviesLocation)
                       : QFileInfo(video_file_).absolutePath();
  const QString path = QFileDialog::getOpenFileName(
      this, tr("Choose a video file"), folder,
      tr("Videos (*.avi *.mp4 *.mkv *.mov *.webm *.mjpg *.mjpeg);;All files (*)"));
  if (path.isEmpty()) {
    // Cancelled: back to what was chosen before, so the chooser never rests on "Video file…".
    source_combo_->setCurrentIndex(last_row_ >= 0 && last_row_ < source_combo_->count()
                                       ? last_row_
                                       : source_combo_->count() - 1);
    updateControls();
    return;
  }
  const bool was_running = isRunning();
  setVideoFile(path);
  last_row_ = source_combo_->currentIndex();
  if (was_running) startSelected();
}

void CameraPanel::startSelected() {
  const int row = source_combo_->currentIndex();
  switch (entryKind(row)) {
    case Entry::Camera: {
      const int index = source_combo_->itemData(row, kValueRole).toInt();
      emit cameraChosen(index);
      startSource(std::make_unique<CameraSource>(index));
      break;
    }
    case Entry::File:
      startSource(std::make_unique<VideoFileSource>(video_file_, loop_check_->isChecked()));
      break;
    case Entry::ChooseFile:
      chooseVideoFile();
      break;
    case Entry::None:
      stop();
      break;
  }
}

void CameraPanel::startSource(std::unique_ptr<FrameSource> source) {
  if (!source) return;
  source_description_ = source->description();
  // A frame from the previous source must not be captured or asked about as if it were this one.
  newest_ = QImage();
  preview_->setImage(QImage());
  first_frame_pending_ = true;
  grabber_->start(std::move(source));
  setStatus(tr("Opening %1…").arg(source_description_));
  preview_->setMessage(tr("Opening %1…").arg(source_description_));
  updateControls();
  emit runningChanged(true);
}

void CameraPanel::stop() {
  if (!grabber_->isRunning()) return;
  grabber_->stop();
  setStatus(tr("Stopped. Press Start to show %1 again.").arg(source_description_));
  preview_->setMessage(newest_.isNull() ? tr("No picture") : QString());
  updateControls();
  emit runningChanged(false);
}

bool CameraPanel::isRunning() const {
  return grabber_->isRunning();
}

void CameraPanel::onStartStop() {
  if (isRunning()) {
    stop();
  } else {
    startSelected();
  }
}

void CameraPanel::onOpened(const QString& description) {
  source_description_ = description;
  setStatus(tr("Showing %1.").arg(description));
}

void CameraPanel::onFrame(const QImage& frame) {
  newest_ = frame;
  preview_->setImage(frame);
  if (first_frame_pending_) {
    first_frame_pending_ = false;
    preview_->setMessage(QString());
    setStatus(
        tr("Showing %1 (%2×%3).").arg(source_description_).arg(frame.width()).arg(frame.height()));
    updateControls();
  }
}

void CameraPanel::onFailed(const QString& message) {
  setStatus(message, true);
  preview_->setMessage(message);
  updateControls();
  emit runningChanged(false);
}

void CameraPanel::onLost(const QString& reason) {
  // A source started from code rather than the chooser cannot be restarted with Start.
  const bool restartable = entryKind(source_combo_->currentIndex()) != Entry::None;
  const QString text = restartable
                           ? tr("%1 Check the connection and press Start to try again.").arg(reason)
                           : tr("%1 Check the connection.").arg(reason);
  setStatus(text, true);
  preview_->setMessage(reason);
  updateControls();
  emit runningChanged(false);
}

void CameraPanel::onFinished() {
  setStatus(
      tr("%1 has ended. Press Start to play it again, or tick Loop.").arg(source_description_));
  preview_->setMessage(tr("Video ended"));
  updateControls();
  emit runningChanged(false);
}

void CameraPanel::captureFrame() {
  if (newest_.isNull()) {
    setStatus(tr("There is no frame to capture yet."), true);
    return;
  }
  emit frameCaptured(newest_);
  setStatus(tr("Frame captured (%1×%2).").arg(newest_.width()).arg(newest_.height()));
}

QString CameraPanel::question() const {
  return question_edit_->text();
}

void CameraPanel::setQuestion(const QString& question) {
  question_edit_->setText(question);
}

void CameraPanel::setLiveInterval(std::chrono::milliseconds interval) {
  live_interval_ = std::max(interval, std::chrono::milliseconds(1));
  live_timer_->setInterval(live_interval_);
  const QSignalBlocker block(interval_spin_);
  const auto seconds = (live_interval_.count() + 999) / 1000;
  interval_spin_->setValue(static_cast<int>(seconds));
}

bool CameraPanel::isLiveMode() const {
  return live_timer_->isActive();
}

void CameraPanel::setLiveMode(bool on) {
  if (live_check_->isChecked() != on) {
    // Comes back here through toggled().
    live_check_->setChecked(on);
    return;
  }
  if (on == live_timer_->isActive()) return;
  if (!on) {
    live_timer_->stop();
    setLiveStatus(awaiting_answer_ ? tr("Off (the last question is still being answered)")
                                   : tr("Off"));
    return;
  }
  skipped_ticks_ = 0;
  live_timer_->start();
  // The first question goes out now rather than one interval later.
  liveTick();
}

void CameraPanel::liveTick() {
  if (awaiting_answer_) {
    ++skipped_ticks_;
    setLiveStatus(tr("Waiting for the answer (%n tick(s) skipped)", nullptr, skipped_ticks_));
    return;
  }
  const QString text = question_edit_->text().trimmed();
  if (text.isEmpty()) {
    setLiveStatus(tr("Type a question to ask."), true);
    return;
  }
  if (!isRunning() || newest_.isNull()) {
    setLiveStatus(tr("Waiting for a picture: start a camera or a video."), true);
    return;
  }
  awaiting_answer_ = true;
  ++questions_asked_;
  asked_clock_.start();
  frame_time_ = QDateTime::currentDateTime();
  setLiveStatus(tr("Asking about the frame from %1…").arg(clockTime(frame_time_)));
  emit liveQuestion(newest_, text);
}

void CameraPanel::liveAnswer(const QString& text) {
  if (!awaiting_answer_) return;
  awaiting_answer_ = false;
  const double seconds = asked_clock_.elapsed() / 1000.0;
  answer_time_label_->setText(tr("Frame from %1, answered in %2 s")
                                  .arg(clockTime(frame_time_))
                                  .arg(QLocale().toString(seconds, 'f', 1)));
  answer_label_->setStyleSheet(QString());
  answer_label_->setText(text.trimmed());
  setLiveStatus(isLiveMode() ? tr("Answered; next question at the next tick") : tr("Off"));
}

void CameraPanel::liveAnswerFailed(const QString& message) {
  if (!awaiting_answer_) return;
  awaiting_answer_ = false;
  answer_time_label_->setText(tr("Frame from %1").arg(clockTime(frame_time_)));
  answer_label_->setStyleSheet(QStringLiteral("color: #b3261e;"));
  answer_label_->setText(tr("No answer: %1").arg(message));
  setLiveStatus(
      isLiveMode() ? tr("The last question failed; trying again at the next tick") : tr("Off"),
      true);
}

void CameraPanel::setStatus(const QString& text, bool problem) {
  status_label_->setText(text);
  status_label_->setStyleSheet(problem ? QStringLiteral("color: #b3261e;") : QString());
}

void CameraPanel::setLiveStatus(const QString& text, bool problem) {
  live_status_label_->setText(text);
  live_status_label_->setStyleSheet(problem ? QStringLiteral("color: #b3261e;") : QString());
}

void CameraPanel::updateControls() {
  const bool running = isRunning();
  const Entry kind = entryKind(source_combo_->currentIndex());
  start_button_->setText(running ? tr("Stop") : tr("Start"));
  start_button_->setAccessibleName(running ? tr("Stop preview") : tr("Start preview"));
  start_button_->setEnabled(running || kind != Entry::None);
  loop_check_->setEnabled(kind == Entry::File);
  capture_button_->setEnabled(!newest_.isNull());
}

}  // namespace mlmamba::ui
