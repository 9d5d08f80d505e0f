// The conversation list beside the chat: most recently updated first, and a proxy that narrows it
// to the titles matching a search. Changed only on the GUI thread.
#pragma once

#include <QAbstractListModel>
#include <QDateTime>
#include <QSortFilterProxyModel>
#include <QVector>

#include "conversation.h"

namespace mlmamba::ui {

struct ConversationSummary {
  QString id;
  QString title;
  QDateTime updated;
};

class ConversationListModel : public QAbstractListModel {
  Q_OBJECT

 public:
  enum DataRole {
    IdRole = Qt::UserRole + 1,  // QString
    TitleRole,                  // QString, empty for an untitled conversation
    UpdatedRole,                // QDateTime
  };
  Q_ENUM(DataRole)

  explicit ConversationListModel(QObject* parent = nullptr);

  // Replaces the whole list (e.g. with ConversationStore::loadAll()); sorted newest first here.
  void setConversations(const QVector<ConversationSummary>& conversations);
  void setConversations(const QVector<Conversation>& conversations);

  // Inserts where its `updated` belongs (a new conversation lands on top). Returns the row; an id
  // already listed is updated in place of a second entry.
  int add(const ConversationSummary& conversation);
  bool remove(const QString& id);
  bool rename(const QString& id, const QString& title);
  // A conversation that just got a message moves to the top.
  bool touch(const QString& id, const QDateTime& updated = QDateTime::currentDateTimeUtc());

  int rowOf(const QString& id) const;  // -1 when absent
  QString idAt(int row) const;
  const QVector<ConversationSummary>& conversations() const { return items_; }

  int rowCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  // Editing the title in the view renames here and reports it, so the window can persist it.
  bool setData(const QModelIndex& index, const QVariant& value, int role = Qt::EditRole) override;
  Qt::ItemFlags flags(const QModelIndex& index) const override;
  QHash<int, QByteArray> roleNames() const override;

 signals:
  void titleEdited(const QString& id, const QString& title);

 private:
  int rowFor(const QDateTime& updated) const;

  QVector<ConversationSummary> items_;
};

// Keeps the rows whose title contains every word of the search, ignoring case; the source's
// order (newest first) is kept.
class ConversationSearchModel : public QSortFilterProxyModel {
  Q_OBJECT

 public:
  explicit ConversationSearchModel(QObject* parent = nullptr);

  void setSearchText(const QString& text);
  QString searchText() const { return text_; }

 protected:
  bool filterAcceptsRow(int sourceRow, const QModelIndex& sourceParent) const override;

 private:
  QString text_;
  QStringList words_;
};

}  // namespace mlmamba::ui
