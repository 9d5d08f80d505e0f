// What a conversation is, independent of widgets and of the engine: plain values the chat model,
// the store and the worker exchange.
#pragma once

#include <QDateTime>
#include <QString>
#include <QVector>

namespace mlmamba::ui {

struct AnswerStats {
  double image_encode_ms = 0;
  int image_rows = 0;
  int prefill_tokens = 0;
  double prefill_ms = 0;
  double time_to_first_token_ms = 0;
  int generated_tokens = 0;
  double decode_tokens_per_s = 0;
  qint64 peak_memory_bytes = 0;
  bool valid = false;
};

struct Message {
  enum class Role { User, Assistant };
  // Streaming: tokens still arriving. Stopped: the person pressed Stop (partial text kept).
  // Failed: the engine reported an error (shown in place of the answer).
  enum class State { Done, Streaming, Stopped, Failed };

  Role role = Role::User;
  QString text;
  QString image;  // for a user message: the picture's file inside the conversation's folder
  State state = State::Done;
  QString error;
  AnswerStats stats;
  QDateTime created;
};

struct Conversation {
  QString id;  // stable, file-name safe
  QString title;
  QDateTime created;
  QDateTime updated;
  QVector<Message> messages;
};

}  // namespace mlmamba::ui
