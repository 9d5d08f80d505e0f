#include <QAbstractItemModelTester>
#include <QSignalSpy>
#include <QTest>

#include "conversation_list_model.h"

using namespace mlmamba::ui;

namespace {

QDateTime day(int d) {
  return QDateTime(QDate(2024, 3, d), QTime(12, 0), Qt::UTC);
}

QStringList ids(const QAbstractItemModel& model) {
  QStringList out;
  for (int row = 0; row < model.rowCount(); ++row)
    out << model.index(row, 0).data(ConversationListModel::IdRole).toString();
  return out;
}

QVector<ConversationSummary> three() {
  return {{"b", "Red circles", day(2)}, {"c", "Counting squares", day(3)}, {"a", "", day(1)}};
}

}  // namespace

class TestConversationListModel : public QObject {
  Q_OBJECT

 private slots:
  void listsNewestFirst() {
    ConversationListModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversations(three());
    QCOMPARE(ids(model), (QStringList{"c", "b", "a"}));
    QCOMPARE(model.index(0).data(ConversationListModel::TitleRole).toString(),
             QStringLiteral("Counting squares"));
    QCOMPARE(model.index(0).data(ConversationListModel::UpdatedRole).toDateTime(), day(3));
    // An untitled conversation still shows something in the list; its title stays empty.
    QVERIFY(!model.index(2).data(Qt::DisplayRole).toString().isEmpty());
    QVERIFY(model.index(2).data(ConversationListModel::TitleRole).toString().isEmpty());
    QCOMPARE(model.rowOf("b"), 1);
    QCOMPARE(model.rowOf("zzz"), -1);
    QCOMPARE(model.idAt(2), QStringLiteral("a"));
    QVERIFY(model.idAt(3).isEmpty());
  }

  void fromConversations() {
    ConversationListModel model;
    Conversation c;
    c.id = "x";
    c.title = "T";
    c.updated = day(5);
    model.setConversations(QVector<Conversation>{c});
    QCOMPARE(model.rowCount(), 1);
    QCOMPARE(model.index(0).data(ConversationListModel::IdRole).toString(), QStringLiteral("x"));
  }

  void addPlacesByTime() {
    ConversationListModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversations(three());
    QSignalSpy inserted(&model, &QAbstractItemModel::rowsInserted);
    QCOMPARE(model.add({"new", "", day(9)}), 0);
    QCOMPARE(model.add({"old", "Archive", day(1).addSecs(-60)}), 4);
    QCOMPARE(model.add({"mid", "Middle", day(2).addSecs(60)}), 2);
    QCOMPARE(inserted.count(), 3);
    QCOMPARE(ids(model), (QStringList{"new", "c", "mid", "b", "a", "old"}));
    // The same id again updates rather than duplicating.
    QCOMPARE(model.add({"old", "Archive 2", day(10)}), 0);
    QCOMPARE(inserted.count(), 3);
    QCOMPARE(model.rowCount(), 6);
    QCOMPARE(model.index(0).data(ConversationListModel::TitleRole).toString(),
             QStringLiteral("Archive 2"));
  }

  void removeAndRename() {
    ConversationListModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversations(three());
    QSignalSpy changed(&model, &QAbstractItemModel::dataChanged);
    QVERIFY(model.rename("b", "Blue circles"));
    QCOMPARE(changed.count(), 1);
    QCOMPARE(changed.at(0).at(0).toModelIndex(), model.index(1));
    QCOMPARE(model.index(1).data(Qt::DisplayRole).toString(), QStringLiteral("Blue circles"));
    QVERIFY(!model.rename("missing", "x"));

    QSignalSpy removed(&model, &QAbstractItemModel::rowsRemoved);
    QVERIFY(model.remove("c"));
    QCOMPARE(removed.count(), 1);
    QCOMPARE(removed.at(0).at(1).toInt(), 0);
    QCOMPARE(ids(model), (QStringList{"b", "a"}));
    QVERIFY(!model.remove("c"));
    QVERIFY(model.remove("a"));
    QVERIFY(model.remove("b"));
    QCOMPARE(model.rowCount(), 0);
  }

  void touchMovesToTheTop() {
    ConversationListModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversations(three());
    QSignalSpy moved(&model, &QAbstractItemModel::rowsMoved);
    QVERIFY(model.touch("a", day(20)));
    QCOMPARE(ids(model), (QStringList{"a", "c", "b"}));
    QCOMPARE(moved.count(), 1);
    QCOMPARE(model.index(0).data(ConversationListModel::UpdatedRole).toDateTime(), day(20));

    // Already on top: stays, no move.
    QVERIFY(model.touch("a", day(21)));
    QCOMPARE(moved.count(), 1);

    // A time in the past moves it down to where it belongs.
    QVERIFY(model.touch("a", day(1).addSecs(-1)));
    QCOMPARE(ids(model), (QStringList{"c", "b", "a"}));
    QVERIFY(model.touch("b"));  // now
    QCOMPARE(ids(model), (QStringList{"b", "c", "a"}));
    QVERIFY(!model.touch("missing"));
  }

  void editingTheTitleInAViewIsReported() {
    ConversationListModel model;
    QAbstractItemModelTester tester(&model, QAbstractItemModelTester::FailureReportingMode::QtTest);
    model.setConversations(three());
    QVERIFY(model.flags(model.index(0)).testFlag(Qt::ItemIsEditable));
    QSignalSpy edited(&model, &ConversationListModel::titleEdited);
    QVERIFY(model.setData(model.index(0), QStringLiteral("  Squares,   counted  ")));
    QCOMPARE(edited.count(), 1);
    QCOMPARE(edited.at(0).at(0).toString(), QStringLiteral("c"));
    QCOMPARE(edited.at(0).at(1).toString(), QStringLiteral("Squares, counted"));
    QCOMPARE(model.index(0).data(Qt::EditRole).toString(), QStringLiteral("Squares, counted"));
    QVERIFY(!model.setData(model.index(0), QStringLiteral("x"), ConversationListModel::IdRole));
    QCOMPARE(edited.count(), 1);
  }

  void searchMatchesTitleWordsIgnoringCase() {
    ConversationListModel model;
    model.setConversations(three());
    ConversationSearchModel search;
    search.setSourceModel(&model);
    QAbstractItemModelTester tester(&search,
                                    QAbstractItemModelTester::FailureReportingMode::QtTest);
    QCOMPARE(ids(search), (QStringList{"c", "b", "a"}));

    search.setSearchText(QStringLiteral("CIRCLE"));
    QCOMPARE(ids(search), QStringList{"b"});
    search.setSearchText(QStringLiteral("  squares   count "));
    QCOMPARE(ids(search), QStringList{"c"});
    search.setSearchText(QStringLiteral("red squares"));
    QVERIFY(ids(search).isEmpty());
    // The placeholder shown for an untitled conversation is not its title.
    search.setSearchText(model.index(2).data(Qt::DisplayRole).toString());
    QVERIFY(!ids(search).contains("a"));

    // The filter follows changes in the source.
    search.setSearchText(QStringLiteral("blue"));
    QVERIFY(ids(search).isEmpty());
    model.rename("a", "Blue triangle");
    QCOMPARE(ids(search), QStringList{"a"});
    model.add({"d", "blue sky", day(30)});
    QCOMPARE(ids(search), (QStringList{"d", "a"}));
    model.touch("a", day(31));
    QCOMPARE(ids(search), (QStringList{"a", "d"}));
    model.remove("d");
    QCOMPARE(ids(search), QStringList{"a"});

    search.setSearchText({});
    QCOMPARE(search.rowCount(), 3);
  }
};

QTEST_GUILESS_MAIN(TestConversationListModel)
#include "test_conversation_list_model.moc"
