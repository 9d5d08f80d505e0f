#include "composer.h"

#include <QFileInfo>
#include <QHBoxLayout>
#include <QImageReader>
#include <QKeyEvent>
#include <QLabel>
#include <QMimeData>
#include <QPushButton>
#include <QToolButton>
#include <QVBoxLayout>

namespace mlmamba::ui {

void PromptEdit::keyPressEvent(QKeyEvent* event) {
  const bool enter = event->key() == Qt::Key_Return || event->key() == Qt::Key_Enter;
  if (enter && !(event->modifiers() & Qt::ShiftModifier)) {
    emit submit();
    return;
  }
  QPlainTextEdit::keyPressEvent(event);
}

bool PromptEdit::canInsertFromMimeData(const QMimeData* source) const {
  return source->hasImage() || QPlainTextEdit::canInsertFromMimeData(source);
}

void PromptEdit::insertFromMimeData(const QMimeData* source) {
  // A pasted picture becomes the attachment rather than text.
  if (source->hasImage()) {
    const QImage image = qvariant_cast<QImage>(source->imageData());
    if (!image.isNull()) {
      emit imagePasted(image);
      return;
    }
  }
  QPlainTextEdit::insertFromMimeData(source);
}

Composer::Composer(QWidget* parent) : QWidget(parent) {
  edit_ = new PromptEdit(this);
  edit_->setPlaceholderText(tr("Ask about the picture… (Enter sends, Shift+Enter for a new line)"));
  edit_->setAccessibleName(tr("Question"));
  edit_->setTabChangesFocus(true);
  edit_->setMaximumHeight(80);
  thumb_ = new QLabel(this);
  thumb_->setAccessibleName(tr("Attached picture"));
  thumb_->setFixedSize(64, 64);
  thumb_->setAlignment(Qt::AlignCenter);
  thumb_label_ = new QLabel(this);
  remove_ = new QToolButton(this);
  remove_->setText(QStringLiteral("✕"));
  remove_->setToolTip(tr("Remove the picture"));
  remove_->setAccessibleName(tr("Remove picture"));
  notice_ = new QLabel(this);
  notice_->setWordWrap(true);
  notice_->setAccessibleName(tr("Notice"));
  notice_->setStyleSheet(QStringLiteral("color: palette(highlight);"));
  notice_->hide();
  attach_ = new QToolButton(this);
  attach_->setText(tr("Picture…"));
  attach_->setToolTip(tr("Attach a picture (Ctrl+O)"));
  attach_->setAccessibleName(tr("Attach picture"));
  send_ = new QPushButton(tr("Send"), this);
  send_->setAccessibleName(tr("Send"));
  send_->setDefault(true);

  strip_ = new QWidget(this);
  auto* strip = new QHBoxLayout(strip_);
  strip->setContentsMargins(0, 0, 0, 0);
  strip->addWidget(thumb_);
  strip->addWidget(thumb_label_, 1);
  strip->addWidget(remove_);
  strip_->hide();

  auto* row = new QHBoxLayout;
  row->addWidget(attach_);
  row->addWidget(edit_, 1);
  row->addWidget(send_);
  auto* col = new QVBoxLayout(this);
  col->setContentsMargins(6, 6, 6, 6);
  col->addWidget(strip_);
  col->addWidget(notice_);
  col->addLayout(row);

  connect(edit_, &PromptEdit::submit, this, [this] {
    if (!busy_) emit sendRequested();
  });
  connect(edit_, &PromptEdit::imagePasted, this,
          [this](const QImage& img) { attachImage(img, tr("Pasted picture")); });
  connect(send_, &QPushButton::clicked, this, [this] {
    if (busy_) {
      emit stopRequested();
    } else {
      emit sendRequested();
    }
  });
  connect(attach_, &QToolButton::clicked, this, &Composer::attachRequested);
  connect(remove_, &QToolButton::clicked, this, &Composer::removeAttachment);
}

QString Composer::text() const {
  return edit_->toPlainText();
}
void Composer::setText(const QString& text) {
  edit_->setPlainText(text);
}

void Composer::clear() {
  edit_->clear();
  removeAttachment();
  notice_->hide();
}

bool Composer::attachFile(const QString& path) {
  QImageReader reader(path);
  reader.setAutoTransform(true);  // EXIF orientation, as the engine applies it
  const QString name = QFileInfo(path).fileName();
  if (!reader.canRead()) {
    showNotice(tr("%1 is not a picture that can be read.").arg(name));
    return false;
  }
  // Reading a huge picture only to show a thumbnail would stall the window: ask for a small one.
  const QSize full = reader.size();
  if (full.isValid() && (full.width() > 20000 || full.height() > 20000 ||
                         qint64(full.width()) * full.height() > (qint64(64) << 20))) {
    showNotice(
        tr("%1 is too large (%2 x %3 pixels).").arg(name).arg(full.width()).arg(full.height()));
    return false;
  }
  const QImage image = reader.read();
  if (image.isNull()) {
    showNotice(tr("%1 could not be read: %2").arg(name, reader.errorString()));
    return false;
  }
  attached_ = image;
  attached_file_ = path;
  thumb_label_->setText(name);
  notice_->hide();
  refresh();
  return true;
}

void Composer::attachImage(const QImage& image, const QString& label) {
  if (image.isNull()) {
    showNotice(tr("The picture is empty."));
    return;
  }
  attached_ = image;
  attached_file_.clear();
  thumb_label_->setText(label);
  notice_->hide();
  refresh();
}

void Composer::removeAttachment() {
  attached_ = QImage();
  attached_file_.clear();
  refresh();
}

void Composer::showNotice(const QString& text) {
  notice_->setText(text);
  notice_->show();
}

QString Composer::notice() const {
  return notice_->isHidden() ? QString() : notice_->text();
}

void Composer::setBusy(bool busy) {
  busy_ = busy;
  send_->setText(busy ? tr("Stop") : tr("Send"));
  send_->setAccessibleName(busy ? tr("Stop") : tr("Send"));
}

void Composer::setCanAttach(bool can) {
  attach_->setEnabled(can);
}

void Composer::refresh() {
  strip_->setVisible(!attached_.isNull());
  if (!attached_.isNull()) {
    thumb_->setPixmap(QPixmap::fromImage(attached_.scaled(
        thumb_->size() * devicePixelRatioF(), Qt::KeepAspectRatio, Qt::SmoothTransformation)));
  }
}

}  // namespace mlmamba::ui
