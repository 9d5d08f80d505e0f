// The desktop program's window: conversations on the left, the chat in the middle, the camera in
// a dock. All engine work goes through InferenceController; models change on this thread only.
#pragma once

#include <optional>

#include <QHash>
#include <QMainWindow>

#include "chat_model.h"
#include "conversation_list_model.h"
#include "conversation_store.h"
#include "inference_controller.h"
#include "settings.h"

class QLabel;
class QLineEdit;
class QListView;
class QProgressBar;
class QDockWidget;

namespace mlmamba::ui {

class Composer;
class MessageDelegate;
class CameraPanel;

// Shown over the window while something droppable is dragged over it.
class DropOverlay : public QWidget {
  Q_OBJECT
 public:
  explicit DropOverlay(QWidget* parent);

 protected:
  void paintEvent(QPaintEvent* event) override;
};

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  // `bundled_model` is the demo model's folder, used when the settings name none.
  MainWindow(Settings* settings, const QString& conversations_root, const QString& bundled_model,
             QWidget* parent = nullptr);
  ~MainWindow() override;

  // For the tests and for files given on the command line / by "Open with".
  Composer* composer() const { return composer_; }
  ChatModel* chat() const { return chat_; }
  ConversationListModel* conversations() const { return list_; }
  InferenceController* engine() const { return engine_; }
  QListView* chatView() const { return chat_view_; }
  CameraPanel* cameraPanel() const { return camera_; }
  QString modelFolder() const;
  QString statusText() const;
  bool openFile(const QString& path);            // attaches a picture
  bool acceptMime(const class QMimeData* mime);  // what a drop or paste carries

 public slots:
  void send();
  void stop();
  void regenerate();
  void editAndResend(int row, const QString& new_text);
  void copyMessage(int row);
  void copyLastAnswer();
  void newConversation();
  void openConversation(const QString& id);
  void deleteConversation(const QString& id);
  void renameConversation(const QString& id, const QString& title);
  void showSettings();
  void showAbout();
  void chooseImage();

 signals:
  void answerFinished();  // after an answer is complete and saved (tests wait on it)

 protected:
  void dragEnterEvent(QDragEnterEvent* event) override;
  void dragLeaveEvent(QDragLeaveEvent* event) override;
  void dropEvent(QDropEvent* event) override;
  void closeEvent(QCloseEvent* event) override;
  void resizeEvent(QResizeEvent* event) override;

 private:
  // The model folder setting before the settings dialog changed it: a folder that then fails to
  // load is not kept, so the next start does not fail on it too.
  std::optional<QString> previous_model_setting_;
  void buildUi();
  void buildMenus();
  void loadConversations();
  void loadModel();
  void startAnswer(const QString& text, const QString& image_relative);
  void save();
  void setBusy(bool busy);
  void updateStatus();
  void showMessageMenu(const QPoint& pos);
  void showConversationMenu(const QPoint& pos);
  GenerationSettings generationSettings() const;
  QVector<Message> historyBefore(int row) const;

  Settings* settings_;
  ConversationStore store_;
  QString bundled_model_;
  InferenceController* engine_;
  ChatModel* chat_;
  ConversationListModel* list_;
  ConversationSearchModel* search_;
  QHash<QString, Conversation> loaded_;  // every conversation's last saved content, by id
  QListView* chat_view_ = nullptr;
  QListView* list_view_ = nullptr;
  QLineEdit* search_edit_ = nullptr;
  Composer* composer_ = nullptr;
  MessageDelegate* delegate_ = nullptr;
  CameraPanel* camera_ = nullptr;
  QDockWidget* camera_dock_ = nullptr;
  DropOverlay* overlay_ = nullptr;
  QLabel* model_label_ = nullptr;
  QLabel* device_label_ = nullptr;
  QLabel* memory_label_ = nullptr;
  QLabel* speed_label_ = nullptr;
  QProgressBar* loading_ = nullptr;
  quint64 request_ = 0;  // the chat answer being written
  int answer_row_ = -1;
  quint64 live_request_ = 0;  // the camera's live question being answered
  QString last_speed_;
};

}  // namespace mlmamba::ui
