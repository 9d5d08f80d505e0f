// The webcam panel: a live preview from a camera or a video file, "Capture frame" for the composer,
// and a live mode that asks one question about the newest frame at an interval. It knows nothing of
// the engine: questions leave as signals and answers come back through slots, so whoever owns the
// panel decides how to answer (the main window hands them to the inference controller).
#pragma once

#include <QDateTime>
#include <QElapsedTimer>
#include <QImage>
#include <QVector>
#include <QWidget>

#include <chrono>
#include <memory>

#include "frame_source.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QPushButton;
class QSpinBox;
class QTimer;

namespace mlmamba::ui {

class CameraPreview;

class CameraPanel : public QWidget {
  Q_OBJECT

 public:
  // `liveIntervalSeconds` comes from the settings; changes go back out through
  // liveIntervalChanged(). The cameras present are listed at once (quick, see listCameras()).
  explicit CameraPanel(int liveIntervalSeconds = 5, QWidget* parent = nullptr);
  ~CameraPanel() override;

  // Replaces the camera entries of the chooser, keeping the rest.
  void setCameras(const QVector<CameraInfo>& cameras);
  // Selects that camera when it is listed (the one used last time, from the settings).
  void setPreferredCamera(int index);
  // Adds `path` to the chooser and selects it, as picking it through "Video file…" does.
  void setVideoFile(const QString& path);
  // Starts whatever the chooser shows, as the Start button does.
  void startSelected();
  // Shows any source, whatever the chooser says.
  void startSource(std::unique_ptr<FrameSource> source);
  void stop();
  bool isRunning() const;
  QImage newestFrame() const { return newest_; }
  const FrameGrabber* grabber() const { return grabber_; }

  QString question() const;
  void setQuestion(const QString& question);
  // Whole seconds through the spin box; finer steps only from code, since waiting for each answer
  // already keeps a short interval from flooding the engine.
  void setLiveInterval(std::chrono::milliseconds interval);
  std::chrono::milliseconds liveInterval() const { return live_interval_; }
  void setLiveMode(bool on);
  bool isLiveMode() const;
  // A question has gone out and neither liveAnswer() nor liveAnswerFailed() has come back.
  bool isAwaitingAnswer() const { return awaiting_answer_; }
  // Ticks that found the previous question still unanswered, since live mode was last turned on.
  int skippedTicks() const { return skipped_ticks_; }
  int questionsAsked() const { return questions_asked_; }

 public slots:
  void refreshCameras();
  void captureFrame();
  // The answer to the last liveQuestion(). Ignored when no question is outstanding.
  void liveAnswer(const QString& text);
  void liveAnswerFailed(const QString& message);

 signals:
  // The newest frame, frozen: later frames do not change it.
  void frameCaptured(const QImage& frame);
  // At most one outstanding: the next comes only after liveAnswer() or liveAnswerFailed().
  void liveQuestion(const QImage& frame, const QString& question);
  void liveIntervalChanged(int seconds);
  // A camera was started from the chooser; worth remembering for next time.
  void cameraChosen(int index);
  void runningChanged(bool running);

 private:
  enum class Entry { Camera, File, ChooseFile, None };

  void buildUi(int liveIntervalSeconds);
  void addEntry(const QString& text, Entry kind, const QVariant& value);
  Entry entryKind(int row) const;
  void onSourceActivated(int row);
  void chooseVideoFile();
  void onStartStop();
  void onOpened(const QString& description);
  void onFrame(const QImage& frame);
  void onFailed(const QString& message);
  void onLost(const QString& reason);
  void onFinished();
  void liveTick();
  void setStatus(const QString& text, bool problem = false);
  void setLiveStatus(const QString& text, bool problem = false);
  void updateControls();

  FrameGrabber* grabber_;
  QComboBox* source_combo_;
  QPushButton* refresh_button_;
  QCheckBox* loop_check_;
  QPushButton* start_button_;
  CameraPreview* preview_;
  QLabel* status_label_;
  QPushButton* capture_button_;
  QLineEdit* question_edit_;
  QCheckBox* live_check_;
  QSpinBox* interval_spin_;
  QLabel* live_status_label_;
  QLabel* answer_time_label_;
  QLabel* answer_label_;
  QTimer* live_timer_;

  QVector<CameraInfo> cameras_;
  int preferred_camera_ = -1;
  QString video_file_;
  bool none_chosen_ = false;
  int last_row_ = -1;  // the chooser's row before "Video file…" was picked, for a cancelled dialog
  QString source_description_;
  QImage newest_;
  bool first_frame_pending_ = false;

  std::chrono::milliseconds live_interval_{5000};
  bool awaiting_answer_ = false;
  int skipped_ticks_ = 0;
  int questions_asked_ = 0;
  QElapsedTimer asked_clock_;
  QDateTime frame_time_;  // when the frame of the outstanding question was taken
};

}  // namespace mlmamba::ui
