// Conversations on disk, one folder each:
//   <root>/<id>/conversation.json   versioned JSON ("mlmamba-conversation", version 1)
//   <root>/<id>/images/<hash>.png   the pictures the person attached, named by content
// Every write goes through QSaveFile, so a crash leaves either the old file or the new one. A file
// this program cannot read (damaged, or written by a newer version) is reported and then left
// exactly as it is: the store refuses to save over it, rename it or delete its folder.
#pragma once

#include <QCoreApplication>
#include <QImage>
#include <QSet>
#include <QString>
#include <QVector>

#include "conversation.h"

namespace mlmamba::ui {

struct StoreStatus {
  enum class Code {
    Ok,
    InvalidId,  // not an id this store hands out (empty, or characters unsafe in a file name)
    Protected,  // the conversation's file is damaged or newer: the store will not touch it
    NotFound,
    NotAnImage,  // the data is not a picture, or a corrupt one
    Io,          // the disk refused (permissions, full, ...)
  };
  Code code = Code::Ok;
  QString message;  // for the person, already translated; empty when ok

  bool ok() const { return code == Code::Ok; }
};

struct ImportedImage {
  QString name;  // relative to the conversation's folder ("images/<hash>.png"); empty on failure
  StoreStatus status;

  bool ok() const { return status.ok(); }
};

// A file loadAll() could not use, with the reason in words.
struct StoreProblem {
  QString path;
  QString reason;
  bool newerVersion = false;  // written by a newer program: not damage, just not ours to read
};

struct LoadedConversations {
  QVector<Conversation> conversations;  // most recently updated first
  QVector<StoreProblem> problems;
};

// Used from the GUI thread: files are small (text plus image names) and written once per message.
class ConversationStore {
  Q_DECLARE_TR_FUNCTIONS(ConversationStore)

 public:
  static constexpr int kFormatVersion = 1;
  // The engine resizes every picture to its encoders' few hundred pixels anyway; keeping more than
  // this only costs disk and load time.
  static constexpr int kMaxImageSide = 2048;

  explicit ConversationStore(QString root);

  const QString& root() const { return root_; }
  QString folderOf(const QString& id) const;
  // Absolute path of a message's picture; empty when `relative` is empty or not a name this store
  // writes (a hand-edited file cannot point outside the conversation's folder).
  QString imagePath(const QString& id, const QString& relative) const {
    return imagePathUnder(root_, id, relative);
  }
  static QString imagePathUnder(const QString& root, const QString& id, const QString& relative);

  // UTC time to the millisecond plus a random suffix: sorts by creation, safe in file names.
  static QString newId();
  static bool isValidId(QStringView id);
  // A fresh conversation with a new id and both times set to now; nothing is written until save().
  Conversation create(const QString& title = {}) const;

  // Every conversation under the root. Folders without conversation.json (pictures imported before
  // the first message was saved) are skipped silently; unreadable files become problems and their
  // ids protected.
  LoadedConversations loadAll();

  // Writes the whole conversation. A message still Streaming is written as Stopped: if the
  // program dies before the answer finishes, the next start shows the partial answer as stopped.
  [[nodiscard]] StoreStatus save(const Conversation& conversation);
  // Deletes the conversation's folder with its pictures.
  [[nodiscard]] StoreStatus remove(const QString& id);
  // Changes the title in the file; `updated` is kept so the list order does not jump.
  [[nodiscard]] StoreStatus rename(const QString& id, const QString& title);

  // Copy a picture into the conversation's images/ folder as PNG, scaled down to kMaxImageSide on
  // the long side when larger. The format is judged by content, not by the file's extension.
  [[nodiscard]] ImportedImage importImageFile(const QString& id, const QString& sourcePath);
  // Encoded picture bytes, e.g. dragged from a browser or pasted as PNG.
  [[nodiscard]] ImportedImage importImageData(const QString& id, const QByteArray& encoded);
  // A decoded picture, e.g. the clipboard's or a camera frame.
  [[nodiscard]] ImportedImage importImage(const QString& id, const QImage& image);

  bool isProtected(const QString& id) const { return protected_.contains(id); }

 private:
  QString fileOf(const QString& id) const;
  StoreStatus checkWritable(const QString& id);
  ImportedImage storeImage(const QString& id, QImage image, const QString& origin);

  QString root_;
  QSet<QString> protected_;
};

}  // namespace mlmamba::ui
