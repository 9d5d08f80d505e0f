#include <QAbstractItemModelTester>
#include <QSignalSpy>
#include <QTest>

#include "chat_model.h"

using namespace mlmamba::ui;

namespace {

Conversation sample() {
  Conversation c;
  c.id = QStringLiteral("20240101-000000-000-abcdef");
  c.title = QStringLiteral("Shapes");
  c.created = QDateTime::fromString(QStringLiteral("2024-01-01T00:00:00.000Z"), Qt::ISODateWithMs);
  c.updated = c.created;
  Message q;
  q.role = Message::Role::User;
  q.text = QStringLiteral("What colour is the circle?");
  q.image = QStringLiteral("images/0123abcd.png");
  q.created = c.created;
  Message a;
  a.role = Message::Role::Assistant;
  a.text = QStringLiteral("Red.");
  a.created = c.created;
  a.stats.valid = true;
  a.stats.generated_tokens = 3;
  a.stats.decode_tokens_per_s = 41.5;
  c.messages = {q, a};
  return c;
}

}  // namespace

class TestChatModel : public QObject {
  Q_OBJECT

 private slots:
  void setConversationResetsAndExposesRoles() {
    ChatModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    QSignalSpy reset(&model, &QAbstractItemModel::modelReset);
    model.setConversationsRoot(QStringLiteral("/data/conversations"));
    model.setConversation(sample());
    QCOMPARE(reset.count(), 1);
    QCOMPARE(model.rowCount(), 2);

    const QModelIndex q = model.index(0);
    QCOMPARE(q.data(ChatModel::RoleRole).toInt(), int(Message::Role::User));
    QCOMPARE(q.data(ChatModel::TextRole).toString(), QStringLiteral("What colour is the circle?"));
    QCOMPARE(q.data(Qt::DisplayRole).toString(), QStringLiteral("What colour is the circle?"));
    QCOMPARE(q.data(ChatModel::ImageRole).toString(),
             QStringLiteral("/data/conversations/20240101-000000-000-abcdef/images/0123abcd.png"));
    QCOMPARE(q.data(ChatModel::ImageNameRole).toString(), QStringLiteral("images/0123abcd.png"));
    QCOMPARE(q.data(ChatModel::StateRole).toInt(), int(Message::State::Done));
    QVERIFY(q.data(ChatModel::StatsRole).toMap().isEmpty());
    QCOMPARE(q.data(ChatModel::CreatedRole).toDateTime(), sample().created);

    const QModelIndex a = model.index(1);
    QCOMPARE(a.data(ChatModel::RoleRole).toInt(), int(Message::Role::Assistant));
    QVERIFY(a.data(ChatModel::ImageRole).toString().isEmpty());
    const QVariantMap stats = a.data(ChatModel::StatsRole).toMap();
    QCOMPARE(stats.value("generated_tokens").toInt(), 3);
    QCOMPARE(stats.value("decode_tokens_per_s").toDouble(), 41.5);
    QVERIFY(model.roleNames().values().contains("text"));
  }

  void imagePathNeedsRootAndStaysInsideTheFolder() {
    ChatModel model;
    Conversation c = sample();
    model.setConversation(c);
    QVERIFY(model.index(0).data(ChatModel::ImageRole).toString().isEmpty());

    c.messages[0].image = QStringLiteral("images/../../../etc/passwd");
    model.setConversationsRoot(QStringLiteral("/data"));
    model.setConversation(c);
    QVERIFY(model.index(0).data(ChatModel::ImageRole).toString().isEmpty());
  }

  void appendUserInsertsOneRowAndUpdatesTimes() {
    ChatModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    Conversation c = sample();
    model.setConversation(c);
    QSignalSpy inserted(&model, &QAbstractItemModel::rowsInserted);
    QSignalSpy changed(&model, &ChatModel::conversationChanged);

    const int row = model.appendUser(QStringLiteral("And the square?"));
    QCOMPARE(row, 2);
    QCOMPARE(inserted.count(), 1);
    QCOMPARE(inserted.at(0).at(1).toInt(), 2);
    QCOMPARE(inserted.at(0).at(2).toInt(), 2);
    QCOMPARE(changed.count(), 1);
    QCOMPARE(model.conversation().messages.size(), 3);
    QCOMPARE(model.conversation().messages[2].text, QStringLiteral("And the square?"));
    QVERIFY(model.conversation().messages[2].created.isValid());
    QVERIFY(model.conversation().updated > c.updated);
    QCOMPARE(model.conversation().created, c.created);
  }

  void firstMessageDatesAFreshConversation() {
    ChatModel model;
    model.appendUser(QStringLiteral("hi"), QStringLiteral("images/ab.png"));
    QVERIFY(model.conversation().created.isValid());
    QCOMPARE(model.conversation().updated, model.conversation().created);
    QCOMPARE(model.conversation().messages[0].image, QStringLiteral("images/ab.png"));
  }

  void streamingTokensChangeOnlyTheirRow() {
    ChatModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversation(sample());
    model.appendUser(QStringLiteral("Count the shapes."));
    QSignalSpy saved(&model, &ChatModel::conversationChanged);
    const int row = model.appendAssistantStreaming();
    QCOMPARE(row, 3);
    QCOMPARE(model.streamingRow(), 3);
    QCOMPARE(model.index(row).data(ChatModel::StateRole).toInt(), int(Message::State::Streaming));

    QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
    const QStringList pieces = {QStringLiteral("There"), QStringLiteral(" are"),
                                QStringLiteral(" three.")};
    for (const QString& piece : pieces) model.appendToken(row, piece);
    QCOMPARE(changed.count(), pieces.size());
    for (const QList<QVariant>& args : changed) {
      QCOMPARE(args.at(0).toModelIndex(), model.index(row));
      QCOMPARE(args.at(1).toModelIndex(), model.index(row));
      QVERIFY(args.at(2).value<QList<int>>().contains(ChatModel::TextRole));
    }
    QCOMPARE(model.index(row).data(ChatModel::TextRole).toString(),
             QStringLiteral("There are three."));
    QCOMPARE(model.index(1).data(ChatModel::TextRole).toString(), QStringLiteral("Red."));
    // Tokens alone are not worth saving; the finished answer is.
    QCOMPARE(saved.count(), 0);
  }

  void tokensForARowNotStreamingAreDropped() {
    ChatModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversation(sample());
    QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
    model.appendToken(1, QStringLiteral(" late"));
    model.appendToken(7, QStringLiteral("out of range"));
    model.appendToken(-1, QStringLiteral("out of range"));
    QCOMPARE(changed.count(), 0);
    QCOMPARE(model.index(1).data(ChatModel::TextRole).toString(), QStringLiteral("Red."));
  }

  void finishRecordsStatsStateAndErrorOnce() {
    ChatModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.appendUser(QStringLiteral("Describe the picture."));
    const int row = model.appendAssistantStreaming();
    model.appendToken(row, QStringLiteral("A blue"));

    QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
    QSignalSpy saved(&model, &ChatModel::conversationChanged);
    AnswerStats stats;
    stats.valid = true;
    stats.prefill_tokens = 120;
    stats.peak_memory_bytes = 123456789012LL;
    QVERIFY(model.finishAssistant(row, stats, Message::State::Stopped));
    QCOMPARE(changed.count(), 1);
    QCOMPARE(changed.at(0).at(0).toModelIndex(), model.index(row));
    QCOMPARE(changed.at(0).at(1).toModelIndex(), model.index(row));
    QCOMPARE(saved.count(), 1);
    QCOMPARE(model.index(row).data(ChatModel::StateRole).toInt(), int(Message::State::Stopped));
    QCOMPARE(model.index(row).data(ChatModel::TextRole).toString(), QStringLiteral("A blue"));
    const QVariantMap map = model.index(row).data(ChatModel::StatsRole).toMap();
    QCOMPARE(map.value("prefill_tokens").toInt(), 120);
    QCOMPARE(map.value("peak_memory_bytes").toLongLong(), 123456789012LL);
    QCOMPARE(model.streamingRow(), -1);

    // The worker's own finish arriving after Stop must not turn the stopped answer into a
    // failed or done one.
    QVERIFY(!model.finishAssistant(row, {}, Message::State::Failed, QStringLiteral("cancelled")));
    QCOMPARE(model.index(row).data(ChatModel::StateRole).toInt(), int(Message::State::Stopped));
    QVERIFY(model.index(row).data(ChatModel::ErrorRole).toString().isEmpty());
    model.appendToken(row, QStringLiteral(" square"));
    QCOMPARE(model.index(row).data(ChatModel::TextRole).toString(), QStringLiteral("A blue"));
  }

  void failureKeepsItsMessage() {
    ChatModel model;
    model.appendUser(QStringLiteral("?"));
    const int row = model.appendAssistantStreaming();
    QVERIFY(
        model.finishAssistant(row, {}, Message::State::Failed, QStringLiteral("out of memory")));
    QCOMPARE(model.index(row).data(ChatModel::ErrorRole).toString(),
             QStringLiteral("out of memory"));
    QCOMPARE(model.index(row).data(ChatModel::StateRole).toInt(), int(Message::State::Failed));
    QVERIFY(model.index(row).data(ChatModel::StatsRole).toMap().isEmpty());
  }

  void truncateAfterRemovesTheTail() {
    ChatModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversation(sample());
    model.appendUser(QStringLiteral("Second question"));
    model.appendAssistantStreaming();
    QCOMPARE(model.rowCount(), 4);

    QSignalSpy removed(&model, &QAbstractItemModel::rowsRemoved);
    QSignalSpy saved(&model, &ChatModel::conversationChanged);
    // Regenerate the second answer: keep its question.
    model.truncateAfter(2);
    QCOMPARE(model.rowCount(), 3);
    QCOMPARE(removed.count(), 1);
    QCOMPARE(removed.at(0).at(1).toInt(), 3);
    QCOMPARE(removed.at(0).at(2).toInt(), 3);
    QCOMPARE(saved.count(), 1);
    QCOMPARE(model.streamingRow(), -1);
    QCOMPARE(model.conversation().messages.size(), 3);

    // Nothing after the last row: no signal.
    model.truncateAfter(2);
    QCOMPARE(removed.count(), 1);

    // Edit and resend the first question: everything after it goes.
    model.truncateAfter(0);
    QCOMPARE(model.rowCount(), 1);
    QCOMPARE(removed.at(1).at(1).toInt(), 1);
    QCOMPARE(removed.at(1).at(2).toInt(), 2);
    QCOMPARE(model.index(0).data(ChatModel::TextRole).toString(),
             QStringLiteral("What colour is the circle?"));

    model.truncateAfter(-1);
    QCOMPARE(model.rowCount(), 0);
    QVERIFY(model.conversation().messages.isEmpty());
  }

  void setUserTextChangesOneRow() {
    ChatModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversation(sample());
    QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
    QSignalSpy saved(&model, &ChatModel::conversationChanged);
    model.setUserText(0, QStringLiteral("What colour is the square?"));
    QCOMPARE(changed.count(), 1);
    QCOMPARE(changed.at(0).at(0).toModelIndex(), model.index(0));
    QCOMPARE(changed.at(0).at(1).toModelIndex(), model.index(0));
    QCOMPARE(saved.count(), 1);
    QCOMPARE(model.conversation().messages[0].text, QStringLiteral("What colour is the square?"));
    QCOMPARE(model.conversation().messages[0].image, QStringLiteral("images/0123abcd.png"));

    model.setUserText(0, QStringLiteral("What colour is the square?"));  // unchanged
    QCOMPARE(changed.count(), 1);
  }

  void editAndResendSequence() {
    // What the window does for "Edit and resend" on the first question.
    ChatModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversation(sample());
    model.truncateAfter(0);
    model.setUserText(0, QStringLiteral("How many circles?"));
    const int row = model.appendAssistantStreaming();
    model.appendToken(row, QStringLiteral("Two."));
    QVERIFY(model.finishAssistant(row, {}, Message::State::Done));
    QCOMPARE(model.rowCount(), 2);
    QCOMPARE(model.conversation().messages[1].text, QStringLiteral("Two."));
    QCOMPARE(model.conversation().messages[1].state, Message::State::Done);
  }

  void titleChangeIsReported() {
    ChatModel model;
    model.setConversation(sample());
    QSignalSpy saved(&model, &ChatModel::conversationChanged);
    model.setTitle(QStringLiteral("Circles"));
    model.setTitle(QStringLiteral("Circles"));
    QCOMPARE(saved.count(), 1);
    QCOMPARE(model.conversation().title, QStringLiteral("Circles"));
  }
};

QTEST_GUILESS_MAIN(TestChatModel)
#include "test_chat_model.moc"
