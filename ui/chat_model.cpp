#include "chat_model.h"

#include <QThread>

#include "conversation_store.h"

namespace mlmamba::ui {

QVariantMap answerStatsToVariantMap(const AnswerStats& s) {
  if (!s.valid) return {};
  return QVariantMap{
      {"image_encode_ms", s.image_encode_ms},
      {"image_rows", s.image_rows},
      {"prefill_tokens", s.prefill_tokens},
      {"prefill_ms", s.prefill_ms},
      {"time_to_first_token_ms", s.time_to_first_token_ms},
      {"generated_tokens", s.generated_tokens},
      {"decode_tokens_per_s", s.decode_tokens_per_s},
      {"peak_memory_bytes", s.peak_memory_bytes},
  };
}

ChatModel::ChatModel(QObject* parent) : QAbstractListModel(parent) {}

void ChatModel::assertGuiThread() const {
  // Views read the model while painting on the GUI thread; a change from any other thread races
  // with them, so the worker must go through queued signals.
  Q_ASSERT(thread() == QThread::currentThread());
}

void ChatModel::touch() {
  conversation_.updated = QDateTime::currentDateTimeUtc();
}

void ChatModel::setConversationsRoot(const QString& root) {
  assertGuiThread();
  if (root == root_) return;
  root_ = root;
  if (!conversation_.messages.isEmpty())
    emit dataChanged(index(0), index(int(conversation_.messages.size()) - 1), {ImageRole});
}

void ChatModel::setConversation(const Conversation& conversation) {
  assertGuiThread();
  beginResetModel();
  conversation_ = conversation;
  endResetModel();
}

void ChatModel::setTitle(const QString& title) {
  assertGuiThread();
  if (title == conversation_.title) return;
  conversation_.title = title;
  emit conversationChanged();
}

int ChatModel::appendUser(const QString& text, const QString& imageRelative) {
  assertGuiThread();
  Message m;
  m.role = Message::Role::User;
  m.text = text;
  m.image = imageRelative;
  m.state = Message::State::Done;
  m.created = QDateTime::currentDateTimeUtc();
  const int row = int(conversation_.messages.size());
  beginInsertRows({}, row, row);
  conversation_.messages.append(m);
  if (!conversation_.created.isValid()) conversation_.created = m.created;
  conversation_.updated = m.created;
  endInsertRows();
  emit conversationChanged();
  return row;
}

int ChatModel::appendAssistantStreaming() {
  assertGuiThread();
  Message m;
  m.role = Message::Role::Assistant;
  m.state = Message::State::Streaming;
  m.created = QDateTime::currentDateTimeUtc();
  const int row = int(conversation_.messages.size());
  beginInsertRows({}, row, row);
  conversation_.messages.append(m);
  endInsertRows();
  // Not conversationChanged(): an empty answer is not worth a save; its first save comes with
  // finishAssistant().
  return row;
}

void ChatModel::appendToken(int row, const QString& piece) {
  assertGuiThread();
  if (!isRow(row) || piece.isEmpty()) return;
  Message& m = conversation_.messages[row];
  if (m.state != Message::State::Streaming) return;
  m.text += piece;
  const QModelIndex i = index(row);
  emit dataChanged(i, i, {Qt::DisplayRole, TextRole});
}

bool ChatModel::finishAssistant(int row, const AnswerStats& stats, Message::State state,
                                const QString& error) {
  assertGuiThread();
  Q_ASSERT(state != Message::State::Streaming);
  if (!isRow(row) || state == Message::State::Streaming) return false;
  Message& m = conversation_.messages[row];
  if (m.state != Message::State::Streaming) return false;
  m.state = state;
  m.stats = stats;
  m.error = error;
  touch();
  const QModelIndex i = index(row);
  emit dataChanged(i, i, {StateRole, ErrorRole, StatsRole});
  emit conversationChanged();
  return true;
}

void ChatModel::truncateAfter(int row) {
  assertGuiThread();
  const int count = int(conversation_.messages.size());
  Q_ASSERT(row >= -1 && row < count);
  const int first = std::max(row + 1, 0);
  if (first >= count) return;
  beginRemoveRows({}, first, count - 1);
  conversation_.messages.resize(first);
  touch();
  endRemoveRows();
  emit conversationChanged();
}

void ChatModel::setUserText(int row, const QString& text) {
  assertGuiThread();
  if (!isRow(row)) return;
  Message& m = conversation_.messages[row];
  Q_ASSERT(m.role == Message::Role::User);
  if (m.role != Message::Role::User || m.text == text) return;
  m.text = text;
  touch();
  const QModelIndex i = index(row);
  emit dataChanged(i, i, {Qt::DisplayRole, TextRole});
  emit conversationChanged();
}

int ChatModel::streamingRow() const {
  for (int row = int(conversation_.messages.size()) - 1; row >= 0; --row) {
    if (conversation_.messages[row].state == Message::State::Streaming) return row;
  }
  return -1;
}

int ChatModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : int(conversation_.messages.size());
}

QVariant ChatModel::data(const QModelIndex& index, int role) const {
  if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
    return {};
  const Message& m = conversation_.messages[index.row()];
  switch (role) {
    case Qt::DisplayRole:
    case TextRole:
      return m.text;
    case Qt::AccessibleTextRole:
      return (m.role == Message::Role::User ? tr("You: %1") : tr("Assistant: %1")).arg(m.text);
    case RoleRole:
      return int(m.role);
    case ImageRole:
      if (root_.isEmpty()) return QString();
      return ConversationStore::imagePathUnder(root_, conversation_.id, m.image);
    case StateRole:
      return int(m.state);
    case ErrorRole:
      return m.error;
    case StatsRole:
      return answerStatsToVariantMap(m.stats);
    case CreatedRole:
      return m.created;
    case ImageNameRole:
      return m.image;
    default:
      return {};
  }
}

QHash<int, QByteArray> ChatModel::roleNames() const {
  QHash<int, QByteArray> names = QAbstractListModel::roleNames();
  names.insert(RoleRole, "role");
  names.insert(TextRole, "text");
  names.insert(ImageRole, "image");
  names.insert(StateRole, "state");
  names.insert(ErrorRole, "error");
  names.insert(StatsRole, "stats");
  names.insert(CreatedRole, "created");
  names.insert(ImageNameRole, "imageName");
  return names;
}

}  // namespace mlmamba::ui
