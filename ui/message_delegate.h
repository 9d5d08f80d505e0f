// Paints one chat message: a bubble with the text rendered from Markdown, the picture's thumbnail,
// the state (stopped, failed) and, on demand, the answer's statistics.
#pragma once

#include <QCache>
#include <QPixmap>
#include <QSet>
#include <QStyledItemDelegate>

class QTextDocument;

namespace mlmamba::ui {

class MessageDelegate : public QStyledItemDelegate {
  Q_OBJECT
 public:
  using QStyledItemDelegate::QStyledItemDelegate;

  void paint(QPainter* painter, const QStyleOptionViewItem& option,
             const QModelIndex& index) const override;
  QSize sizeHint(const QStyleOptionViewItem& option, const QModelIndex& index) const override;

  // Statistics under an answer are shown for the rows toggled here.
  void toggleStats(int row);
  bool statsShown(int row) const { return stats_rows_.contains(row); }
  void clearStats() { stats_rows_.clear(); }

  static QString statsText(const QVariantMap& stats);

 private:
  struct Layout {
    QRect bubble, thumb, text;
    int height = 0;
  };
  Layout layout(const QStyleOptionViewItem& option, const QModelIndex& index,
                QTextDocument* doc) const;
  void fillDocument(QTextDocument* doc, const QModelIndex& index,
                    const QStyleOptionViewItem& option) const;
  QPixmap thumbnail(const QString& path) const;

  QSet<int> stats_rows_;
  mutable QCache<QString, QPixmap> thumbs_{64};
};

}  // namespace mlmamba::ui
