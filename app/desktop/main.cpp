// mlmamba-desktop: the windowed program. One instance per user: a second start hands its files to
// the running one and raises its window.
#include <QApplication>
#include <QCommandLineParser>
#include <QDir>
#include <QFileInfo>
#include <QIcon>
#include <QLocalServer>
#include <QLocalSocket>
#include <QSettings>
#include <QStandardPaths>
#include <QTimer>

#include "composer.h"
#include "main_window.h"
#include "settings.h"

namespace {

// The demo model: next to the program when installed (../share/mlmamba/models/shapes-demo), in
// the source tree when run from a build folder.
QString bundled_model() {
  const QString app = QCoreApplication::applicationDirPath();
  for (const QString& candidate :
       {app + QStringLiteral("/../share/mlmamba/models/shapes-demo"),
        QStringLiteral(MLMAMBA_SOURCE_DIR) + QStringLiteral("/resources/models/shapes-demo"),
        QStringLiteral(MLMAMBA_SOURCE_DIR) + QStringLiteral("/tests/fixtures/mlmamba_tiny_dual")}) {
    if (QFileInfo(candidate + QStringLiteral("/config.json")).isFile())
      return QDir(candidate).canonicalPath();
  }
  return {};
}

QString server_name() {
  return QStringLiteral("mlmamba-desktop-") + QString::fromLocal8Bit(qgetenv("USER"));
}

}  // namespace

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName(QStringLiteral("mlmamba-desktop"));
  QApplication::setOrganizationName(QStringLiteral("ML-Mamba"));
  QApplication::setApplicationDisplayName(QStringLiteral("ML-Mamba Desktop"));
  QApplication::setApplicationVersion(QStringLiteral(MLMAMBA_VERSION_STRING));
  QApplication::setDesktopFileName(QStringLiteral("mlmamba-desktop"));
  QApplication::setWindowIcon(QIcon(QStringLiteral(":/icons/mlmamba-desktop-64.png")));

  QCommandLineParser cli;
  cli.setApplicationDescription(QStringLiteral("A local visual assistant."));
  cli.addHelpOption();
  cli.addVersionOption();
  QCommandLineOption self_check(
      QStringLiteral("self-check"),
      QStringLiteral("Start, load the model, answer one question about the picture "
                     "given, print it and quit (for installers and tests)."));
  QCommandLineOption question(QStringLiteral("question"),
                              QStringLiteral("The question for --self-check."),
                              QStringLiteral("text"), QStringLiteral("What shapes do you see?"));
  QCommandLineOption screenshot(
      QStringLiteral("screenshot"),
      QStringLiteral("With --self-check: save a picture of the window with the answer."),
      QStringLiteral("file"));
  cli.addOption(self_check);
  cli.addOption(screenshot);
  cli.addOption(question);
  cli.addPositionalArgument(QStringLiteral("pictures"), QStringLiteral("Pictures to attach."),
                            QStringLiteral("[files…]"));
  cli.process(app);
  const QStringList files = cli.positionalArguments();
  const bool checking = cli.isSet(self_check);

  if (!checking) {
    QLocalSocket other;
    other.connectToServer(server_name());
    if (other.waitForConnected(300)) {
      other.write((QStringLiteral("raise\n") + files.join('\n')).toUtf8());
      other.waitForBytesWritten(1000);
      return 0;
    }
  }

  QSettings store;
  mlmamba::ui::Settings settings(&store);
  const QString conversations = QStandardPaths::writableLocation(QStandardPaths::AppDataLocation) +
                                QStringLiteral("/conversations");
  mlmamba::ui::MainWindow window(&settings, conversations, bundled_model());
  for (const QString& f : files) window.openFile(QFileInfo(f).absoluteFilePath());

  if (checking) {
    // Answers once through the same window, worker and engine a person would use, then quits.
    int code = 1;
    QObject::connect(window.engine(), &mlmamba::ui::InferenceController::modelLoadFailed, &app,
                     [&](const QString&, const QString& why) {
                       fprintf(stderr, "self-check: model not loaded: %s\n", qPrintable(why));
                       app.exit(3);
                     });
    QObject::connect(window.engine(), &mlmamba::ui::InferenceController::modelLoaded, &app, [&] {
      window.composer()->setText(cli.value(question));
      window.send();
    });
    QObject::connect(&window, &mlmamba::ui::MainWindow::answerFinished, &app, [&] {
      const QString answer = window.chat()
                                 ->index(window.chat()->rowCount() - 1)
                                 .data(mlmamba::ui::ChatModel::TextRole)
                                 .toString();
      printf("%s\n%s\n", qPrintable(window.statusText()), qPrintable(answer));
      if (cli.isSet(screenshot) && !window.grab().save(cli.value(screenshot))) {
        fprintf(stderr, "self-check: could not write %s\n", qPrintable(cli.value(screenshot)));
      }
      code = 0;
      app.exit(0);
    });
    QTimer::singleShot(120000, &app, [&] { app.exit(4); });
    window.show();
    const int r = app.exec();
    return r == 0 ? code : r;
  }

  QLocalServer::removeServer(server_name());
  QLocalServer server;
  server.listen(server_name());
  QObject::connect(&server, &QLocalServer::newConnection, &window, [&] {
    QLocalSocket* s = server.nextPendingConnection();
    QObject::connect(s, &QLocalSocket::readyRead, &window, [&, s] {
      const QStringList lines = QString::fromUtf8(s->readAll()).split('\n', Qt::SkipEmptyParts);
      for (const QString& line : lines.mid(1)) window.openFile(line);
      window.showNormal();
      window.raise();
      window.activateWindow();
      s->deleteLater();
    });
  });
  window.show();
  return app.exec();
}
