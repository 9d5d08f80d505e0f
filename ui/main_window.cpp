#include "main_window.h"

#include <QAccessible>
#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QCloseEvent>
#include <QComboBox>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDockWidget>
#include <QDoubleSpinBox>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QInputDialog>
#include <QLabel>
#include <QLineEdit>
#include <QListView>
#include <QMenu>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QPainter>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QStatusBar>
#include <QTimer>
#include <QVBoxLayout>

#include "camera_panel.h"
#include "composer.h"
#include "message_delegate.h"
#include "mlmamba/mlmamba.h"

namespace mlmamba::ui {
namespace {

QString resident_memory() {
  QFile f(QStringLiteral("/proc/self/statm"));
  if (!f.open(QIODevice::ReadOnly)) return {};
  const QList<QByteArray> parts = f.readAll().split(' ');
  if (parts.size() < 2) return {};
  const double mib = parts[1].toDouble() * 4096.0 / (1 << 20);
  return mib > 1024 ? QObject::tr("%1 GiB").arg(mib / 1024, 0, 'f', 1)
                    : QObject::tr("%1 MiB").arg(mib, 0, 'f', 0);
}

QString title_from(const QString& text) {
  QString t = text.simplified();
  if (t.isEmpty()) t = QObject::tr("Picture");
  return t.size() > 48 ? t.left(45) + QStringLiteral("…") : t;
}

}  // namespace

DropOverlay::DropOverlay(QWidget* parent) : QWidget(parent) {
  setAttribute(Qt::WA_TransparentForMouseEvents);
  hide();
}

void DropOverlay::paintEvent(QPaintEvent*) {
  QPainter p(this);
  QColor shade = palette().color(QPalette::Highlight);
  shade.setAlpha(60);
  p.fillRect(rect(), shade);
  QPen pen(palette().color(QPalette::Highlight), 3, Qt::DashLine);
  p.setPen(pen);
  p.drawRoundedRect(rect().adjusted(12, 12, -12, -12), 16, 16);
  QFont f = font();
  f.setPointSizeF(f.pointSizeF() * 1.6);
  p.setFont(f);
  p.setPen(palette().color(QPalette::WindowText));
  p.drawText(rect(), Qt::AlignCenter, tr("Drop a picture to ask about it"));
}

MainWindow::MainWindow(Settings* settings, const QString& conversations_root,
                       const QString& bundled_model, QWidget* parent)
    : QMainWindow(parent),
      settings_(settings),
      store_(conversations_root),
      bundled_model_(bundled_model),
      engine_(new InferenceController(this)),
      chat_(new ChatModel(this)),
      list_(new ConversationListModel(this)),
      search_(new ConversationSearchModel(this)) {
  chat_->setConversationsRoot(store_.root());
  search_->setSourceModel(list_);
  buildUi();
  buildMenus();
  setAcceptDrops(true);

  connect(engine_, &InferenceController::modelLoaded, this, [this](const ModelSummary&) {
    previous_model_setting_.reset();
    composer_->setCanAttach(engine_->model().has_vision);
    updateStatus();
  });
  connect(engine_, &InferenceController::modelLoadFailed, this,
          [this](const QString& folder, const QString& why) {
            updateStatus();
            QString text = tr("The model in %1 could not be loaded:\n\n%2").arg(folder, why);
            if (previous_model_setting_) {
              settings_->setValue(setting::modelFolder, *previous_model_setting_);
              previous_model_setting_.reset();
              if (engine_->modelReady())
                text += tr("\n\nThe model in use stays %1.").arg(engine_->model().folder);
            }
            QMessageBox::warning(this, tr("Model not loaded"), text);
          });
  connect(engine_, &InferenceController::busyChanged, this, &MainWindow::setBusy);
  connect(engine_, &InferenceController::tokens, this, [this](quint64 r, const QString& piece) {
    if (r == request_ && answer_row_ >= 0) chat_->appendToken(answer_row_, piece);
  });
  connect(engine_, &InferenceController::finished, this,
          [this](quint64 r, const QString& text, const AnswerStats& stats, bool stopped) {
            if (r == live_request_) {
              live_request_ = 0;
              camera_->liveAnswer(text);
              return;
            }
            if (r != request_) return;
            chat_->finishAssistant(answer_row_, stats,
                                   stopped ? Message::State::Stopped : Message::State::Done);
            last_speed_ = tr("%1 tokens/s").arg(stats.decode_tokens_per_s, 0, 'f', 1);
            const QString answer = chat_->index(answer_row_).data(ChatModel::TextRole).toString();
            request_ = 0;
            answer_row_ = -1;
            save();
            // Screen readers hear the new answer.
            chat_view_->setAccessibleDescription(answer);
            QAccessibleEvent ev(chat_view_, QAccessible::DescriptionChanged);
            QAccessible::updateAccessibility(&ev);
            updateStatus();
            emit answerFinished();
          });
  connect(engine_, &InferenceController::failed, this, [this](quint64 r, const QString& message) {
    if (r == live_request_) {
      live_request_ = 0;
      camera_->liveAnswerFailed(message);
      return;
    }
    if (r != request_) return;
    chat_->finishAssistant(answer_row_, {}, Message::State::Failed, message);
    request_ = 0;
    answer_row_ = -1;
    save();
    emit answerFinished();
  });

  auto* memory_timer = new QTimer(this);
  connect(memory_timer, &QTimer::timeout, this, &MainWindow::updateStatus);
  memory_timer->start(2000);

  restoreGeometry(settings_->value(setting::windowGeometry));
  restoreState(settings_->value(setting::windowState));
  loadConversations();
  newConversation();
  loadModel();
}

MainWindow::~MainWindow() = default;

void MainWindow::buildUi() {
  setWindowTitle(tr("ML-Mamba Desktop"));
  resize(1100, 720);
  // Conversations
  auto* left = new QWidget(this);
  auto* left_col = new QVBoxLayout(left);
  left_col->setContentsMargins(6, 6, 0, 6);
  auto* new_button = new QPushButton(tr("New chat"), left);
  new_button->setAccessibleName(tr("New chat"));
  search_edit_ = new QLineEdit(left);
  search_edit_->setPlaceholderText(tr("Search conversations"));
  search_edit_->setAccessibleName(tr("Search conversations"));
  search_edit_->setClearButtonEnabled(true);
  list_view_ = new QListView(left);
  list_view_->setModel(search_);
  list_view_->setAccessibleName(tr("Conversations"));
  list_view_->setContextMenuPolicy(Qt::CustomContextMenu);
  list_view_->setEditTriggers(QAbstractItemView::EditKeyPressed);
  left_col->addWidget(new_button);
  left_col->addWidget(search_edit_);
  left_col->addWidget(list_view_, 1);
  connect(new_button, &QPushButton::clicked, this, &MainWindow::newConversation);
  connect(search_edit_, &QLineEdit::textChanged, search_, &ConversationSearchModel::setSearchText);
  connect(list_view_, &QListView::activated, this, [this](const QModelIndex& i) {
    openConversation(i.data(ConversationListModel::IdRole).toString());
  });
  connect(list_view_, &QListView::clicked, this, [this](const QModelIndex& i) {
    openConversation(i.data(ConversationListModel::IdRole).toString());
  });
  connect(list_view_, &QListView::customContextMenuRequested, this,
          &MainWindow::showConversationMenu);
  connect(list_, &ConversationListModel::titleEdited, this, &MainWindow::renameConversation);

  // Chat
  auto* center = new QWidget(this);
  auto* col = new QVBoxLayout(center);
  col->setContentsMargins(0, 6, 6, 6);
  chat_view_ = new QListView(center);
  chat_view_->setModel(chat_);
  delegate_ = new MessageDelegate(chat_view_);
  chat_view_->setItemDelegate(delegate_);
  chat_view_->setAccessibleName(tr("Conversation"));
  chat_view_->setVerticalScrollMode(QAbstractItemView::ScrollPerPixel);
  chat_view_->setResizeMode(QListView::Adjust);
  chat_view_->setUniformItemSizes(false);
  chat_view_->setWordWrap(true);
  chat_view_->setSelectionMode(QAbstractItemView::SingleSelection);
  chat_view_->setContextMenuPolicy(Qt::CustomContextMenu);
  chat_view_->setAcceptDrops(false);
  connect(chat_view_, &QListView::customContextMenuRequested, this, &MainWindow::showMessageMenu);
  connect(chat_view_, &QListView::doubleClicked, this, [this](const QModelIndex& i) {
    delegate_->toggleStats(i.row());
    chat_view_->doItemsLayout();
  });
  // Follow the answer as it grows.
  connect(chat_, &QAbstractItemModel::dataChanged, chat_view_,
          [this] { chat_view_->scrollToBottom(); });
  connect(chat_, &QAbstractItemModel::rowsInserted, chat_view_,
          [this] { chat_view_->scrollToBottom(); });
  composer_ = new Composer(center);
  composer_->editor()->setAcceptDrops(false);  // drops go to the window, which knows pictures
  connect(composer_, &Composer::sendRequested, this, &MainWindow::send);
  connect(composer_, &Composer::stopRequested, this, &MainWindow::stop);
  connect(composer_, &Composer::attachRequested, this, &MainWindow::chooseImage);
  col->addWidget(chat_view_, 1);
  col->addWidget(composer_);

  auto* split = new QSplitter(this);
  split->addWidget(left);
  split->addWidget(center);
  split->setStretchFactor(1, 1);
  split->setSizes({240, 860});
  setCentralWidget(split);

  overlay_ = new DropOverlay(this);

  // The camera lives in a dock: it can sit beside the chat, float, or be closed.
  camera_ = new CameraPanel(settings_->value(setting::cameraIntervalSeconds), this);
  camera_->setPreferredCamera(settings_->value(setting::cameraDeviceIndex));
  camera_dock_ = new QDockWidget(tr("Camera"), this);
  camera_dock_->setObjectName(QStringLiteral("camera"));
  camera_dock_->setWidget(camera_);
  addDockWidget(Qt::RightDockWidgetArea, camera_dock_);
  camera_dock_->hide();
  connect(camera_, &CameraPanel::frameCaptured, this, [this](const QImage& frame) {
    composer_->attachImage(frame, tr("Camera frame"));
    composer_->editor()->setFocus();
  });
  connect(camera_, &CameraPanel::liveQuestion, this,
          [this](const QImage& frame, const QString& question) {
            if (!engine_->modelReady()) {
              camera_->liveAnswerFailed(tr("The model is not loaded yet."));
              return;
            }
            live_request_ = engine_->askAboutFrame(frame, question, generationSettings());
          });
  connect(camera_, &CameraPanel::liveIntervalChanged, this,
          [this](int seconds) { settings_->setValue(setting::cameraIntervalSeconds, seconds); });
  connect(camera_, &CameraPanel::cameraChosen, this,
          [this](int index) { settings_->setValue(setting::cameraDeviceIndex, index); });

  model_label_ = new QLabel(this);
  device_label_ = new QLabel(this);
  memory_label_ = new QLabel(this);
  speed_label_ = new QLabel(this);
  loading_ = new QProgressBar(this);
  loading_->setRange(0, 0);  // the engine gives no fraction while loading: a busy indicator
  loading_->setMaximumWidth(120);
  loading_->setAccessibleName(tr("Loading the model"));
  // Fixed widths: numbers that change every two seconds must not make the bar jump or clip.
  const QFontMetrics fm(font());
  speed_label_->setMinimumWidth(fm.horizontalAdvance(QStringLiteral("99999.9 tokens/s")));
  memory_label_->setMinimumWidth(fm.horizontalAdvance(QStringLiteral("Memory: 999.9 GiB")));
  speed_label_->setAccessibleName(tr("Speed of the last answer"));
  memory_label_->setAccessibleName(tr("Memory in use"));
  statusBar()->addWidget(model_label_);
  statusBar()->addWidget(device_label_);
  statusBar()->addWidget(loading_);
  statusBar()->addPermanentWidget(speed_label_);
  statusBar()->addPermanentWidget(memory_label_);
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu(tr("&File"));
  QAction* a = file->addAction(tr("&New chat"), this, &MainWindow::newConversation);
  a->setShortcut(QKeySequence::New);
  a = file->addAction(tr("&Open picture…"), this, &MainWindow::chooseImage);
  a->setShortcut(QKeySequence::Open);
  a = file->addAction(tr("&Settings…"), this, &MainWindow::showSettings);
  a->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Comma));
  file->addSeparator();
  a = file->addAction(tr("&Quit"), this, &QWidget::close);
  a->setShortcut(QKeySequence::Quit);

  QMenu* chat = menuBar()->addMenu(tr("&Chat"));
  a = chat->addAction(tr("&Stop answer"), this, &MainWindow::stop);
  a->setShortcut(QKeySequence(Qt::Key_Escape));
  a = chat->addAction(tr("&Regenerate answer"), this, &MainWindow::regenerate);
  a->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_R));
  a = chat->addAction(tr("&Copy last answer"), this, &MainWindow::copyLastAnswer);
  a->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_C));
  a = chat->addAction(tr("Paste picture"), this,
                      [this] { acceptMime(QApplication::clipboard()->mimeData()); });
  a->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_V));

  QMenu* view = menuBar()->addMenu(tr("&View"));
  QAction* camera = camera_dock_->toggleViewAction();
  camera->setText(tr("&Camera"));
  camera->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_K));
  view->addAction(camera);

  QMenu* help = menuBar()->addMenu(tr("&Help"));
  help->addAction(tr("&About ML-Mamba Desktop"), this, &MainWindow::showAbout);
}

QString MainWindow::modelFolder() const {
  const QString chosen = settings_->value(setting::modelFolder);
  return chosen.isEmpty() ? bundled_model_ : chosen;
}

void MainWindow::loadModel() {
  engine_->loadModel(modelFolder(), deviceChoiceName(settings_->value(setting::device)));
  updateStatus();
}

void MainWindow::loadConversations() {
  LoadedConversations all = store_.loadAll();
  loaded_.clear();
  for (const Conversation& c : all.conversations) loaded_.insert(c.id, c);
  list_->setConversations(all.conversations);
  if (!all.problems.isEmpty()) {
    QStringList lines;
    for (const StoreProblem& p : all.problems)
      lines << QStringLiteral("%1: %2").arg(p.path, p.reason);
    // Reported, never overwritten: the files stay as they are for the person to rescue.
    statusBar()->showMessage(
        tr("%n conversation file(s) could not be read and were left untouched.", "",
           static_cast<int>(all.problems.size())),
        15000);
    setProperty("storeProblems", lines);
  }
}

GenerationSettings MainWindow::generationSettings() const {
  GenerationSettings g;
  g.temperature = static_cast<float>(settings_->value(setting::temperature));
  g.top_k = settings_->value(setting::topK);
  g.top_p = static_cast<float>(settings_->value(setting::topP));
  g.repetition_penalty = static_cast<float>(settings_->value(setting::repetitionPenalty));
  g.seed = settings_->value(setting::seed);
  g.max_new_tokens = settings_->value(setting::maxNewTokens);
  return g;
}

QVector<Message> MainWindow::historyBefore(int row) const {
  QVector<Message> h;
  const Conversation& c = chat_->conversation();
  // Whole turns only, and not the ones whose answer failed: the model never read those.
  for (int i = 0; i + 1 < row && i + 1 < c.messages.size(); i += 2) {
    Message user = c.messages[i];
    const Message& reply = c.messages[i + 1];
    if (user.role != Message::Role::User || reply.role != Message::Role::Assistant) continue;
    if (reply.state == Message::State::Failed) continue;
    user.image = store_.imagePath(c.id, user.image);  // the worker wants files it can open
    h.push_back(user);
    h.push_back(reply);
  }
  return h;
}

void MainWindow::send() {
  if (request_ != 0) return;
  const QString text = composer_->text().trimmed();
  if (text.isEmpty() && !composer_->hasAttachment()) return;
  if (!engine_->modelReady()) {
    composer_->showNotice(tr("The model is not loaded yet."));
    return;
  }
  if (composer_->hasAttachment() && !engine_->model().has_vision) {
    composer_->showNotice(tr("This model does not read pictures."));
    return;
  }
  Conversation c = chat_->conversation();
  if (!loaded_.contains(c.id)) {
    chat_->setTitle(title_from(text));
  }
  QString relative;
  if (composer_->hasAttachment()) {
    const ImportedImage imported = composer_->attachmentFile().isEmpty()
                                       ? store_.importImage(c.id, composer_->attachment())
                                       : store_.importImageFile(c.id, composer_->attachmentFile());
    if (!imported.ok()) {
      composer_->showNotice(imported.status.message);
      return;
    }
    relative = imported.name;
  }
  composer_->clear();
  startAnswer(text.isEmpty() ? tr("Describe the image.") : text, relative);
}

void MainWindow::startAnswer(const QString& text, const QString& image_relative) {
  const int user_row = chat_->appendUser(text, image_relative);
  const QVector<Message> history = historyBefore(user_row);
  answer_row_ = chat_->appendAssistantStreaming();
  save();  // the question is kept even if the program dies while answering
  const QString image = store_.imagePath(chat_->conversation().id, image_relative);
  request_ = engine_->ask(chat_->conversation().id, history, text, image, generationSettings());
}

void MainWindow::stop() {
  if (request_ != 0) engine_->stop(request_);
}

void MainWindow::regenerate() {
  if (request_ != 0) return;
  const Conversation& c = chat_->conversation();
  int last = static_cast<int>(c.messages.size()) - 1;
  if (last < 0) return;
  if (c.messages[last].role == Message::Role::Assistant) --last;
  if (last < 0 || c.messages[last].role != Message::Role::User) return;
  const Message question = c.messages[last];
  chat_->truncateAfter(last - 1);  // the question is appended again, with a fresh answer
  startAnswer(question.text, question.image);
}

void MainWindow::editAndResend(int row, const QString& new_text) {
  if (request_ != 0) return;
  const Conversation& c = chat_->conversation();
  if (row < 0 || row >= c.messages.size() || c.messages[row].role != Message::Role::User) return;
  const QString image = c.messages[row].image;
  chat_->truncateAfter(row - 1);
  startAnswer(new_text, image);
}

void MainWindow::copyMessage(int row) {
  QApplication::clipboard()->setText(chat_->index(row).data(ChatModel::TextRole).toString());
}

void MainWindow::copyLastAnswer() {
  const Conversation& c = chat_->conversation();
  for (int i = static_cast<int>(c.messages.size()) - 1; i >= 0; --i) {
    if (c.messages[i].role == Message::Role::Assistant) {
      copyMessage(i);
      statusBar()->showMessage(tr("Answer copied"), 3000);
      return;
    }
  }
}

void MainWindow::save() {
  const Conversation& c = chat_->conversation();
  if (c.messages.isEmpty()) return;
  const StoreStatus s = store_.save(c);
  if (!s.ok()) {
    statusBar()->showMessage(tr("Not saved: %1").arg(s.message), 10000);
    return;
  }
  const bool fresh = !loaded_.contains(c.id);
  loaded_.insert(c.id, c);
  if (fresh) {
    list_->add(ConversationSummary{c.id, c.title, c.updated});
  } else {
    list_->touch(c.id, c.updated);
  }
}

void MainWindow::newConversation() {
  if (request_ != 0) stop();
  chat_->setConversation(store_.create());
  delegate_->clearStats();
  composer_->clear();
  composer_->editor()->setFocus();
}

void MainWindow::openConversation(const QString& id) {
  if (id == chat_->conversation().id || !loaded_.contains(id)) return;
  if (request_ != 0) {
    stop();
    return;  // the answer being written belongs to the open conversation: finish it first
  }
  chat_->setConversation(loaded_.value(id));
  delegate_->clearStats();
}

void MainWindow::deleteConversation(const QString& id) {
  if (QMessageBox::question(this, tr("Delete conversation"),
                            tr("Delete \"%1\" and its pictures?").arg(loaded_.value(id).title)) !=
      QMessageBox::Yes) {
    return;
  }
  const StoreStatus s = store_.remove(id);
  if (!s.ok()) {
    QMessageBox::warning(this, tr("Not deleted"), s.message);
    return;
  }
  loaded_.remove(id);
  list_->remove(id);
  engine_->forget(id);
  if (chat_->conversation().id == id) newConversation();
}

void MainWindow::renameConversation(const QString& id, const QString& title) {
  const StoreStatus s = store_.rename(id, title);
  if (!s.ok()) {
    statusBar()->showMessage(tr("Not renamed: %1").arg(s.message), 10000);
    return;
  }
  list_->rename(id, title);
  if (loaded_.contains(id)) loaded_[id].title = title;
  if (chat_->conversation().id == id) chat_->setTitle(title);
}

void MainWindow::chooseImage() {
  const QString file = QFileDialog::getOpenFileName(
      this, tr("Open picture"), settings_->value(setting::lastImageFolder),
      tr("Pictures (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff);;All files (*)"));
  if (file.isEmpty()) return;
  settings_->setValue(setting::lastImageFolder, QFileInfo(file).absolutePath());
  openFile(file);
}

bool MainWindow::openFile(const QString& path) {
  const bool ok = composer_->attachFile(path);
  composer_->editor()->setFocus();
  return ok;
}

bool MainWindow::acceptMime(const QMimeData* mime) {
  if (!mime) return false;
  if (mime->hasUrls()) {
    for (const QUrl& url : mime->urls()) {
      if (url.isLocalFile()) return openFile(url.toLocalFile());
    }
  }
  if (mime->hasImage()) {
    const QImage image = qvariant_cast<QImage>(mime->imageData());
    // Some sources announce an image but only carry it encoded: those are read below.
    if (!image.isNull()) {
      composer_->attachImage(image, tr("Dropped picture"));
      return true;
    }
  }
  // Browsers offer the encoded file itself under its MIME type.
  for (const QString& format : mime->formats()) {
    if (format.startsWith(QLatin1String("image/"))) {
      const QImage img = QImage::fromData(mime->data(format));
      if (!img.isNull()) {
        composer_->attachImage(img, tr("Dropped picture"));
        return true;
      }
      composer_->showNotice(tr("The dropped data is not a picture that can be read."));
      return false;
    }
  }
  if (mime->hasUrls()) {
    composer_->showNotice(
        tr("Only pictures on this computer can be dropped (this program works offline)."));
    return false;
  }
  if (mime->hasText()) {
    composer_->editor()->insertPlainText(mime->text());
    return true;
  }
  return false;
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event) {
  const QMimeData* m = event->mimeData();
  const QStringList formats = m->formats();
  const bool encoded_picture = std::any_of(formats.begin(), formats.end(), [](const QString& f) {
    return f.startsWith(QLatin1String("image/"));
  });
  if (m->hasUrls() || m->hasImage() || m->hasText() || encoded_picture) {
    overlay_->setGeometry(rect());
    overlay_->raise();
    overlay_->show();
    event->acceptProposedAction();
  }
}

void MainWindow::dragLeaveEvent(QDragLeaveEvent*) {
  overlay_->hide();
}

void MainWindow::dropEvent(QDropEvent* event) {
  overlay_->hide();
  if (acceptMime(event->mimeData())) event->acceptProposedAction();
}

void MainWindow::resizeEvent(QResizeEvent* event) {
  QMainWindow::resizeEvent(event);
  if (overlay_->isVisible()) overlay_->setGeometry(rect());
}

void MainWindow::closeEvent(QCloseEvent* event) {
  if (request_ != 0) engine_->stop(request_);
  if (live_request_ != 0) engine_->stop(live_request_);
  camera_->stop();
  settings_->setValue(setting::windowGeometry, saveGeometry());
  settings_->setValue(setting::windowState, saveState());
  QMainWindow::closeEvent(event);
}

void MainWindow::setBusy(bool busy) {
  // Stop is offered only for the chat's own answer, not for a model load or a live question.
  composer_->setBusy(busy && request_ != 0);
  updateStatus();  // also shows or hides the loading indicator
}

QString MainWindow::statusText() const {
  return QStringList{model_label_->text(), device_label_->text(), speed_label_->text(),
                     memory_label_->text()}
      .join(QStringLiteral(" | "));
}

void MainWindow::updateStatus() {
  if (engine_->modelReady()) {
    const ModelSummary& m = engine_->model();
    model_label_->setText(tr("Model: %1").arg(m.name));
    device_label_->setText(m.fallback_reason.isEmpty()
                               ? tr("Device: %1").arg(m.device)
                               : tr("Device: %1 (GPU not used)").arg(m.device));
    device_label_->setToolTip(m.fallback_reason);
  } else {
    model_label_->setText(tr("Loading model…"));
    device_label_->clear();
  }
  loading_->setVisible(!engine_->modelReady() && engine_->busy());
  speed_label_->setText(last_speed_);
  memory_label_->setText(tr("Memory: %1").arg(resident_memory()));
}

void MainWindow::showMessageMenu(const QPoint& pos) {
  const QModelIndex index = chat_view_->indexAt(pos);
  if (!index.isValid()) return;
  const int row = index.row();
  const bool user =
      index.data(ChatModel::RoleRole).toInt() == static_cast<int>(Message::Role::User);
  QMenu menu(this);
  menu.addAction(tr("Copy"), this, [this, row] { copyMessage(row); });
  if (user) {
    menu.addAction(tr("Edit and resend…"), this, [this, row, index] {
      bool ok = false;
      const QString text =
          QInputDialog::getMultiLineText(this, tr("Edit question"), tr("Question:"),
                                         index.data(ChatModel::TextRole).toString(), &ok);
      if (ok && !text.trimmed().isEmpty()) editAndResend(row, text.trimmed());
    });
  } else {
    menu.addAction(delegate_->statsShown(row) ? tr("Hide statistics") : tr("Show statistics"), this,
                   [this, row] {
                     delegate_->toggleStats(row);
                     chat_view_->doItemsLayout();
                   });
    if (row == chat_->rowCount() - 1)
      menu.addAction(tr("Regenerate"), this, &MainWindow::regenerate);
  }
  menu.exec(chat_view_->viewport()->mapToGlobal(pos));
}

void MainWindow::showConversationMenu(const QPoint& pos) {
  const QModelIndex index = list_view_->indexAt(pos);
  if (!index.isValid()) return;
  const QString id = index.data(ConversationListModel::IdRole).toString();
  QMenu menu(this);
  menu.addAction(tr("Rename"), this, [this, index] { list_view_->edit(index); });
  menu.addAction(tr("Delete"), this, [this, id] { deleteConversation(id); });
  menu.exec(list_view_->viewport()->mapToGlobal(pos));
}

void MainWindow::showSettings() {
  QDialog dlg(this);
  dlg.setWindowTitle(tr("Settings"));
  auto* form = new QFormLayout;
  auto* folder = new QLineEdit(settings_->value(setting::modelFolder), &dlg);
  folder->setPlaceholderText(tr("The bundled demo model"));
  folder->setAccessibleName(tr("Model folder"));
  auto* browse = new QPushButton(tr("Browse…"), &dlg);
  auto* folder_row = new QHBoxLayout;
  folder_row->addWidget(folder, 1);
  folder_row->addWidget(browse);
  connect(browse, &QPushButton::clicked, &dlg, [&] {
    const QString d = QFileDialog::getExistingDirectory(&dlg, tr("Model folder"), folder->text());
    if (!d.isEmpty()) folder->setText(d);
  });
  auto* device = new QComboBox(&dlg);
  device->setAccessibleName(tr("Device"));
  device->addItem(tr("Automatic (GPU when available)"), deviceChoiceName(DeviceChoice::Auto));
  device->addItem(tr("CPU"), deviceChoiceName(DeviceChoice::Cpu));
  device->addItem(tr("GPU (CUDA)"), deviceChoiceName(DeviceChoice::Cuda));
  device->setCurrentIndex(device->findData(deviceChoiceName(settings_->value(setting::device))));
  auto* temperature = new QDoubleSpinBox(&dlg);
  temperature->setRange(0, 5);
  temperature->setSingleStep(0.1);
  temperature->setValue(settings_->value(setting::temperature));
  temperature->setAccessibleName(tr("Temperature"));
  temperature->setSpecialValueText(tr("0 (greedy)"));
  auto* top_k = new QSpinBox(&dlg);
  top_k->setRange(0, 100000);
  top_k->setValue(settings_->value(setting::topK));
  top_k->setSpecialValueText(tr("off"));
  top_k->setAccessibleName(tr("Top-k"));
  auto* top_p = new QDoubleSpinBox(&dlg);
  top_p->setRange(0.01, 1.0);
  top_p->setSingleStep(0.05);
  top_p->setValue(settings_->value(setting::topP));
  top_p->setAccessibleName(tr("Top-p"));
  auto* rep = new QDoubleSpinBox(&dlg);
  rep->setRange(0.5, 3.0);
  rep->setSingleStep(0.05);
  rep->setValue(settings_->value(setting::repetitionPenalty));
  rep->setAccessibleName(tr("Repetition penalty"));
  auto* max_tokens = new QSpinBox(&dlg);
  max_tokens->setRange(0, 100000);
  max_tokens->setValue(settings_->value(setting::maxNewTokens));
  max_tokens->setSpecialValueText(tr("the model's own"));
  max_tokens->setAccessibleName(tr("Maximum answer tokens"));
  auto* interval = new QSpinBox(&dlg);
  interval->setRange(1, 3600);
  interval->setSuffix(tr(" s"));
  interval->setValue(settings_->value(setting::cameraIntervalSeconds));
  interval->setAccessibleName(tr("Camera live interval"));
  form->addRow(tr("Model folder"), folder_row);
  form->addRow(tr("Device"), device);
  form->addRow(tr("Temperature"), temperature);
  form->addRow(tr("Top-k"), top_k);
  form->addRow(tr("Top-p"), top_p);
  form->addRow(tr("Repetition penalty"), rep);
  form->addRow(tr("Maximum answer tokens"), max_tokens);
  form->addRow(tr("Camera live interval"), interval);
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, &dlg);
  connect(buttons, &QDialogButtonBox::accepted, &dlg, &QDialog::accept);
  connect(buttons, &QDialogButtonBox::rejected, &dlg, &QDialog::reject);
  auto* col = new QVBoxLayout(&dlg);
  col->addLayout(form);
  col->addWidget(buttons);
  if (dlg.exec() != QDialog::Accepted) return;
  const QString old_folder = modelFolder();
  const QString old_setting = settings_->value(setting::modelFolder);
  const DeviceChoice old_device = settings_->value(setting::device);
  const QString chosen = folder->text().trimmed();
  if (!chosen.isEmpty() && !QFileInfo(chosen + QStringLiteral("/config.json")).isFile()) {
    QMessageBox::warning(
        this, tr("Not a model folder"),
        tr("%1 has no config.json, so it is not a model folder. The model was not changed.")
            .arg(chosen));
  } else {
    settings_->setValue(setting::modelFolder, chosen);
  }
  settings_->setValue(setting::device, *deviceChoiceFromName(device->currentData().toString()));
  settings_->setValue(setting::temperature, temperature->value());
  settings_->setValue(setting::topK, top_k->value());
  settings_->setValue(setting::topP, top_p->value());
  settings_->setValue(setting::repetitionPenalty, rep->value());
  settings_->setValue(setting::maxNewTokens, max_tokens->value());
  settings_->setValue(setting::cameraIntervalSeconds, interval->value());
  if (modelFolder() != old_folder || settings_->value(setting::device) != old_device) {
    if (modelFolder() != old_folder) previous_model_setting_ = old_setting;
    loadModel();
  }
}

void MainWindow::showAbout() {
  const ModelSummary& m = engine_->model();
  QMessageBox::about(
      this, tr("About ML-Mamba Desktop"),
      tr("<h3>ML-Mamba Desktop %1</h3>"
         "<p>A local visual assistant: ML-Mamba (vision encoders, Mamba-2 Scan Connector, Mamba-2 "
         "language "
         "model) running on this computer, offline.</p>"
         "<p>Engine %2 · Qt %3<br>Model: %4<br>Device: %5%6</p>"
         "<p>Licences: Qt (LGPLv3), OpenCV (Apache 2.0), OpenBLAS (BSD), ICU (Unicode licence), "
         "nlohmann/json (MIT). The ML-Mamba architecture is described in arXiv 2407.19832.</p>")
          .arg(QStringLiteral(MLMAMBA_VERSION_STRING),
               QString::fromUtf8(mlmamba::version().data(), mlmamba::version().size()),
               QString::fromLatin1(qVersion()), m.name.isEmpty() ? tr("none") : m.name, m.device,
               m.fallback_reason.isEmpty() ? QString()
                                           : QStringLiteral(" (%1)").arg(m.fallback_reason)));
}

}  // namespace mlmamba::ui
