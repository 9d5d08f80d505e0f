#include "message_delegate.h"

#include <QAbstractTextDocumentLayout>
#include <QApplication>
#include <QImageReader>
#include <QPainter>
#include <QTextCursor>
#include <QTextDocument>
#include <cmath>

#include "chat_model.h"

namespace mlmamba::ui {
namespace {

constexpr int kMargin = 8;
constexpr int kPadding = 10;
constexpr int kThumb = 160;

bool is_user(const QModelIndex& index) {
  return index.data(ChatModel::RoleRole).toInt() == static_cast<int>(Message::Role::User);
}

}  // namespace

QString MessageDelegate::statsText(const QVariantMap& s) {
  if (s.isEmpty()) return {};
  QStringList parts;
  if (s.value("image_rows").toInt() > 0) {
    parts << tr("picture %1 ms").arg(s.value("image_encode_ms").toDouble(), 0, 'f', 0);
  }
  parts << tr("prompt %1 tokens in %2 ms")
               .arg(s.value("prefill_tokens").toInt())
               .arg(s.value("prefill_ms").toDouble(), 0, 'f', 0);
  parts << tr("first token %1 ms").arg(s.value("time_to_first_token_ms").toDouble(), 0, 'f', 0);
  parts << tr("%1 tokens at %2 tokens/s")
               .arg(s.value("generated_tokens").toInt())
               .arg(s.value("decode_tokens_per_s").toDouble(), 0, 'f', 1);
  return parts.join(QStringLiteral(" · "));
}

void MessageDelegate::toggleStats(int row) {
  if (!stats_rows_.remove(row)) stats_rows_.insert(row);
}

QPixmap MessageDelegate::thumbnail(const QString& path) const {
  if (path.isEmpty()) return {};
  if (QPixmap* p = thumbs_.object(path)) return *p;
  QImageReader reader(path);
  reader.setAutoTransform(true);
  const QSize full = reader.size();
  if (full.isValid()) reader.setScaledSize(full.scaled(kThumb, kThumb, Qt::KeepAspectRatio));
  const QImage img = reader.read();
  if (img.isNull()) return {};
  auto* pm = new QPixmap(QPixmap::fromImage(img));
  thumbs_.insert(path, pm);
  return *pm;
}

void MessageDelegate::fillDocument(QTextDocument* doc, const QModelIndex& index,
                                   const QStyleOptionViewItem& option) const {
  doc->setDefaultFont(option.font);
  doc->setDocumentMargin(0);
  const QString text = index.data(ChatModel::TextRole).toString();
  const auto state = static_cast<Message::State>(index.data(ChatModel::StateRole).toInt());
  QString md = is_user(index) ? text.toHtmlEscaped().replace('\n', "<br>") : text;
  if (is_user(index)) {
    doc->setHtml(md);
  } else {
    if (md.isEmpty() && state == Message::State::Streaming) md = QStringLiteral("…");
    doc->setMarkdown(md);
  }
  QTextCursor c(doc);
  c.movePosition(QTextCursor::End);
  QTextCharFormat small;
  small.setForeground(option.palette.color(QPalette::PlaceholderText));
  QFont f = option.font;
  f.setPointSizeF(f.pointSizeF() * 0.85);
  small.setFont(f);
  if (state == Message::State::Stopped) c.insertText(QStringLiteral("\n") + tr("(stopped)"), small);
  if (state == Message::State::Failed) {
    QTextCharFormat err = small;
    err.setForeground(QColor(200, 40, 40));
    c.insertText(
        QStringLiteral("\n") + tr("Error: %1").arg(index.data(ChatModel::ErrorRole).toString()),
        err);
  }
  if (!is_user(index) && statsShown(index.row())) {
    const QString s = statsText(index.data(ChatModel::StatsRole).toMap());
    if (!s.isEmpty()) c.insertText(QStringLiteral("\n") + s, small);
  }
}

MessageDelegate::Layout MessageDelegate::layout(const QStyleOptionViewItem& option,
                                                const QModelIndex& index,
                                                QTextDocument* doc) const {
  Layout l;
  const int full = std::max(200, option.rect.width());
  const int max_bubble = std::max(160, full * 4 / 5);
  const QPixmap thumb = thumbnail(index.data(ChatModel::ImageRole).toString());
  doc->setTextWidth(max_bubble - 2 * kPadding);
  const int text_w =
      std::min(static_cast<int>(std::ceil(doc->idealWidth())), max_bubble - 2 * kPadding);
  doc->setTextWidth(std::max(text_w, 1));
  const int text_h = static_cast<int>(std::ceil(doc->size().height()));
  const int inner_w = std::max(text_w, thumb.isNull() ? 0 : thumb.width());
  const int thumb_h = thumb.isNull() ? 0 : thumb.height() + kPadding / 2;
  const int bubble_w = inner_w + 2 * kPadding, bubble_h = thumb_h + text_h + 2 * kPadding;
  const int x =
      is_user(index) ? option.rect.right() - kMargin - bubble_w : option.rect.left() + kMargin;
  l.bubble = QRect(x, option.rect.top() + kMargin / 2, bubble_w, bubble_h);
  if (!thumb.isNull())
    l.thumb = QRect(QPoint(x + kPadding, l.bubble.top() + kPadding), thumb.size());
  l.text = QRect(x + kPadding, l.bubble.top() + kPadding + thumb_h, text_w, text_h);
  l.height = bubble_h + kMargin;
  return l;
}

void MessageDelegate::paint(QPainter* painter, const QStyleOptionViewItem& option,
                            const QModelIndex& index) const {
  QTextDocument doc;
  fillDocument(&doc, index, option);
  const Layout l = layout(option, index, &doc);
  painter->save();
  painter->setRenderHint(QPainter::Antialiasing);
  const QPalette& pal = option.palette;
  // Colours come from the system palette, so light and dark themes both read well.
  const QColor bubble = is_user(index)
                            ? pal.color(QPalette::Highlight)
                                  .lighter(pal.color(QPalette::Window).lightness() > 128 ? 170 : 60)
                            : pal.color(QPalette::AlternateBase);
  painter->setPen((option.state & QStyle::State_Selected)
                      ? QPen(pal.color(QPalette::Highlight), 1.5)
                      : Qt::NoPen);
  painter->setBrush(bubble);
  painter->drawRoundedRect(l.bubble, 10, 10);
  if (!l.thumb.isNull())
    painter->drawPixmap(l.thumb, thumbnail(index.data(ChatModel::ImageRole).toString()));
  painter->translate(l.text.topLeft());
  QAbstractTextDocumentLayout::PaintContext ctx;
  ctx.palette = pal;
  ctx.palette.setColor(QPalette::Text, pal.color(QPalette::Text));
  doc.documentLayout()->draw(painter, ctx);
  painter->restore();
}

QSize MessageDelegate::sizeHint(const QStyleOptionViewItem& option,
                                const QModelIndex& index) const {
  QTextDocument doc;
  fillDocument(&doc, index, option);
  return QSize(option.rect.width(), layout(option, index, &doc).height);
}

}  // namespace mlmamba::ui
