// Where a question is written: the text, an optional picture (thumbnail with a remove button),
// attach, and one button that is Send while idle and Stop while an answer is being written.
#pragma once

#include <QImage>
#include <QPlainTextEdit>
#include <QWidget>

class QLabel;
class QToolButton;
class QPushButton;

namespace mlmamba::ui {

// Enter sends, Shift+Enter starts a new line.
class PromptEdit : public QPlainTextEdit {
  Q_OBJECT
 public:
  using QPlainTextEdit::QPlainTextEdit;
 signals:
  void submit();
  void imagePasted(const QImage& image);

 protected:
  void keyPressEvent(QKeyEvent* event) override;
  bool canInsertFromMimeData(const QMimeData* source) const override;
  void insertFromMimeData(const QMimeData* source) override;
};

class Composer : public QWidget {
  Q_OBJECT
 public:
  explicit Composer(QWidget* parent = nullptr);

  QString text() const;
  void setText(const QString& text);
  void clear();  // text and picture
  // The picture to send: a file (checked to be a readable picture) or pixels (pasted, dropped
  // from a browser, a camera frame). Returns false and shows why in place when it is not usable.
  bool attachFile(const QString& path);
  void attachImage(const QImage& image, const QString& label);
  void removeAttachment();
  bool hasAttachment() const { return !attached_.isNull(); }
  const QImage& attachment() const { return attached_; }
  QString attachmentFile() const { return attached_file_; }  // empty for pasted pixels
  void showNotice(const QString& text);  // an inline message under the thumbnail strip
  QString notice() const;
  void setBusy(bool busy);  // Send becomes Stop
  void setCanAttach(bool can);
  PromptEdit* editor() const { return edit_; }

 signals:
  void sendRequested();
  void stopRequested();
  void attachRequested();

 private:
  void refresh();
  PromptEdit* edit_;
  QLabel* thumb_;
  QLabel* thumb_label_;
  QToolButton* remove_;
  QLabel* notice_;
  QPushButton* send_;
  QToolButton* attach_;
  QWidget* strip_;
  QImage attached_;
  QString attached_file_;
  bool busy_ = false;
};

}  // namespace mlmamba::ui
