#include "conversation_list_model.h"

#include <QRegularExpression>
#include <QThread>

#include <algorithm>

namespace mlmamba::ui {

namespace {

bool newerFirst(const ConversationSummary& a, const ConversationSummary& b) {
  if (a.updated != b.updated) return a.updated > b.updated;
  return a.id > b.id;
}

}  // namespace

ConversationListModel::ConversationListModel(QObject* parent) : QAbstractListModel(parent) {}

void ConversationListModel::setConversations(const QVector<ConversationSummary>& conversations) {
  Q_ASSERT(thread() == QThread::currentThread());
  beginResetModel();
  items_ = conversations;
  std::stable_sort(items_.begin(), items_.end(), newerFirst);
  endResetModel();
}

void ConversationListModel::setConversations(const QVector<Conversation>& conversations) {
  QVector<ConversationSummary> summaries;
  summaries.reserve(conversations.size());
  for (const Conversation& c : conversations) summaries.append({c.id, c.title, c.updated});
  setConversations(summaries);
}

int ConversationListModel::rowFor(const QDateTime& updated) const {
  // Before the first entry that is not newer; ties go on top, as the newest arrival.
  const auto it = std::find_if(items_.cbegin(), items_.cend(), [&](const ConversationSummary& s) {
    return !(s.updated > updated);
  });
  return int(it - items_.cbegin());
}

int ConversationListModel::add(const ConversationSummary& conversation) {
  Q_ASSERT(thread() == QThread::currentThread());
  if (const int existing = rowOf(conversation.id); existing >= 0) {
    rename(conversation.id, conversation.title);
    touch(conversation.id, conversation.updated);
    return rowOf(conversation.id);
  }
  const int row = rowFor(conversation.updated);
  beginInsertRows({}, row, row);
  items_.insert(row, conversation);
  endInsertRows();
  return row;
}

bool ConversationListModel::remove(const QString& id) {
  Q_ASSERT(thread() == QThread::currentThread());
  const int row = rowOf(id);
  if (row < 0) return false;
  beginRemoveRows({}, row, row);
  items_.removeAt(row);
  endRemoveRows();
  return true;
}

bool ConversationListModel::rename(const QString& id, const QString& title) {
  Q_ASSERT(thread() == QThread::currentThread());
  const int row = rowOf(id);
  if (row < 0) return false;
  if (items_[row].title != title) {
    items_[row].title = title;
    const QModelIndex i = index(row);
    emit dataChanged(i, i, {Qt::DisplayRole, Qt::EditRole, Qt::ToolTipRole, TitleRole});
  }
  return true;
}

bool ConversationListModel::touch(const QString& id, const QDateTime& updated) {
  Q_ASSERT(thread() == QThread::currentThread());
  const int row = rowOf(id);
  if (row < 0) return false;
  items_[row].updated = updated;
  const QModelIndex i = index(row);
  emit dataChanged(i, i, {UpdatedRole});
  // Where it belongs among the others (the top, unless `updated` lies in the past).
  ConversationSummary moving = items_[row];
  items_.removeAt(row);
  const int target = rowFor(updated);
  items_.insert(row, moving);
  if (target != row) {
    // beginMoveRows counts the destination before the move: moving down needs one past it.
    beginMoveRows({}, row, row, {}, target > row ? target + 1 : target);
    items_.move(row, target);
    endMoveRows();
  }
  return true;
}

int ConversationListModel::rowOf(const QString& id) const {
  for (int row = 0; row < items_.size(); ++row) {
    if (items_[row].id == id) return row;
  }
  return -1;
}

QString ConversationListModel::idAt(int row) const {
  return row >= 0 && row < items_.size() ? items_[row].id : QString();
}

int ConversationListModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : int(items_.size());
}

QVariant ConversationListModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
    return {};
  const ConversationSummary& s = items_[index.row()];
  switch (role) {
    case Qt::DisplayRole:
    case Qt::ToolTipRole:
      return s.title.isEmpty() ? tr("New conversation") : s.title;
    case Qt::EditRole:
    case TitleRole:
      return s.title;
    case IdRole:
      return s.id;
    case UpdatedRole:
      return s.updated;
    default:
      return {};
  }
}

bool ConversationListModel::setData(const QModelIndex& index, const QVariant& value, int role) {
  if (role != Qt::EditRole ||
      !checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
    return false;
  const QString title = value.toString().simplified();
  const QString id = items_[index.row()].id;
  if (title == items_[index.row()].title) return true;
  rename(id, title);
  emit titleEdited(id, title);
  return true;
}

Qt::ItemFlags ConversationListModel::flags(const QModelIndex& index) const {
  Qt::ItemFlags f = QAbstractListModel::flags(index);
  if (index.isValid()) f |= Qt::ItemIsEditable | Qt::ItemNeverHasChildren;
  return f;
}

QHash<int, QByteArray> ConversationListModel::roleNames() const {
  QHash<int, QByteArray> names = QAbstractListModel::roleNames();
  names.insert(IdRole, "conversationId");
  names.insert(TitleRole, "title");
  names.insert(UpdatedRole, "updated");
  return names;
}

ConversationSearchModel::ConversationSearchModel(QObject* parent) : QSortFilterProxyModel(parent) {
  setFilterRole(ConversationListModel::TitleRole);
  setFilterCaseSensitivity(Qt::CaseInsensitive);
}

void ConversationSearchModel::setSearchText(const QString& text) {
  if (text == text_) return;
  text_ = text;
  words_ = text.split(QRegularExpression(QStringLiteral("\\s+")), Qt::SkipEmptyParts);
  invalidateFilter();
}

bool ConversationSearchModel::filterAcceptsRow(int sourceRow,
                                               const QModelIndex& sourceParent) const {
  if (words_.isEmpty()) return true;
  const QString title =
      sourceModel()->index(sourceRow, 0, sourceParent).data(filterRole()).toString();
  return std::all_of(words_.cbegin(), words_.cend(), [&](const QString& word) {
    return title.contains(word, filterCaseSensitivity());
  });
}

}  // namespace mlmamba::ui
