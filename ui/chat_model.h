// The messages of the open conversation, as a list model for the chat view.
//
// Changed only on the GUI thread: the inference worker never touches it. Its tokens and results
// arrive as queued signals, and the window turns them into appendToken() / finishAssistant()
// calls here. Every mutator asserts this in debug builds.
#pragma once

#include <QAbstractListModel>
#include <QVariantMap>

#include "conversation.h"

namespace mlmamba::ui {

// The statistics of one answer as the view shows them; keys as in the conversation file
// ("prefill_tokens", "decode_tokens_per_s", ...). Empty when the answer has none.
QVariantMap answerStatsToVariantMap(const AnswerStats& stats);

class ChatModel : public QAbstractListModel {
  Q_OBJECT

 public:
  enum DataRole {
    RoleRole = Qt::UserRole + 1,  // int: Message::Role
    TextRole,                     // QString
    ImageRole,                    // QString: absolute path of the picture, empty when there is none
    StateRole,                    // int: Message::State
    ErrorRole,                    // QString
    StatsRole,                    // QVariantMap, see answerStatsToVariantMap()
    CreatedRole,                  // QDateTime
    ImageNameRole,                // QString: the picture's name inside the conversation's folder
  };
  Q_ENUM(DataRole)

  explicit ChatModel(QObject* parent = nullptr);

  // The folder that holds one sub-folder per conversation (ConversationStore::root()); pictures
  // are resolved against <root>/<conversation id>/.
  void setConversationsRoot(const QString& root);
  QString conversationsRoot() const { return root_; }

  void setConversation(const Conversation& conversation);
  const Conversation& conversation() const { return conversation_; }
  void setTitle(const QString& title);

  // Each returns the new row. `imageRelative` is what ConversationStore::importImage*() returned.
  int appendUser(const QString& text, const QString& imageRelative = {});
  int appendAssistantStreaming();
  // A late piece for a row that is no longer streaming (Stop was pressed, or the row was
  // finished) is dropped: the answer shown is the one the person stopped. Callers coalesce
  // pieces (a few tens of milliseconds) before calling, each call repaints the row.
  void appendToken(int row, const QString& piece);
  // Closes a streaming row. Returns false (and changes nothing) when the row is not streaming,
  // so a finish that arrives after Stop cannot overwrite the stopped state.
  bool finishAssistant(int row, const AnswerStats& stats, Message::State state,
                       const QString& error = {});
  // Keeps rows 0..row and removes the rest (-1 empties the conversation): Regenerate keeps the
  // question, Edit and resend keeps what came before the edited question.
  void truncateAfter(int row);
  void setUserText(int row, const QString& text);

  // Row of the answer still streaming, or -1.
  int streamingRow() const;

  int rowCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QHash<int, QByteArray> roleNames() const override;

 signals:
  // After a change worth saving (a message added, finished, edited, removed, or the title).
  void conversationChanged();

 private:
  void assertGuiThread() const;
  bool isRow(int row) const { return row >= 0 && row < conversation_.messages.size(); }
  void touch();

  Conversation conversation_;
  QString root_;
};

}  // namespace mlmamba::ui
