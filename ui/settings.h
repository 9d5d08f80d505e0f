// The person's choices that outlive the program. Every value is declared once below with its key in
// the settings file and its default; widgets receive a Settings object instead of reaching for a
// global QSettings, so each one can be tested against a throwaway INI file.
#pragma once

#include <QByteArray>
#include <QObject>
#include <QString>
#include <QStringView>
#include <QVariant>

#include <cmath>
#include <optional>
#include <tuple>

class QSettings;

namespace mlmamba::ui {

// Where inference runs. Auto: CUDA when its module loads and finds a GPU, else the CPU.
enum class DeviceChoice { Auto, Cpu, Cuda };

QString deviceChoiceName(DeviceChoice device);  // "auto", "cpu", "cuda": the stored spelling
std::optional<DeviceChoice> deviceChoiceFromName(QStringView name);

// One stored value. `accepts` guards against hand-edited or older files: a stored value it rejects
// reads as the default, and a setter given such a value leaves the file alone.
template <typename T>
struct SettingKey {
  const char* key;
  T defaultValue;
  bool (*accepts)(const T&) = nullptr;
};

// The table. Sampling defaults match the engine's: greedy decoding, every filter off.
namespace setting {
// Empty: the demo model bundled with the program.
inline const SettingKey<QString> modelFolder{"model/folder", QString()};
inline const SettingKey<DeviceChoice> device{"model/device", DeviceChoice::Auto};
inline const SettingKey<double> temperature{
    "sampling/temperature", 0.0, [](const double& v) { return std::isfinite(v) && v >= 0; }};
inline const SettingKey<int> topK{"sampling/top_k", 0, [](const int& v) { return v >= 0; }};
inline const SettingKey<double> topP{"sampling/top_p", 1.0,
                                     [](const double& v) { return v > 0 && v <= 1; }};
inline const SettingKey<double> repetitionPenalty{
    "sampling/repetition_penalty", 1.0, [](const double& v) { return std::isfinite(v) && v > 0; }};
inline const SettingKey<quint64> seed{"sampling/seed", 0};
// 0: the answer length the model package declares.
inline const SettingKey<int> maxNewTokens{"generation/max_new_tokens", 0,
                                          [](const int& v) { return v >= 0; }};
// Below a second the live mode would queue questions faster than the model answers them.
inline const SettingKey<int> cameraIntervalSeconds{
    "camera/interval_seconds", 5, [](const int& v) { return v >= 1 && v <= 3600; }};
inline const SettingKey<int> cameraDeviceIndex{"camera/device_index", 0,
                                               [](const int& v) { return v >= 0; }};
inline const SettingKey<QByteArray> windowGeometry{"window/geometry", QByteArray()};
inline const SettingKey<QByteArray> windowState{"window/state", QByteArray()};
inline const SettingKey<QString> lastImageFolder{"images/last_folder", QString()};

// Every setting above, for code that walks all of them (reset(), tests).
inline const auto all = std::tie(modelFolder, device, temperature, topK, topP, repetitionPenalty,
                                 seed, maxNewTokens, cameraIntervalSeconds, cameraDeviceIndex,
                                 windowGeometry, windowState, lastImageFolder);
}  // namespace setting

// How each type of value is spelled in the settings file. A stored value that cannot be read back
// as its type decodes to nullopt, and the getter falls back to the default.
namespace setting_codec {
template <typename T>
struct Type {};
std::optional<QString> decode(const QVariant& stored, Type<QString>);
std::optional<QByteArray> decode(const QVariant& stored, Type<QByteArray>);
std::optional<double> decode(const QVariant& stored, Type<double>);
std::optional<int> decode(const QVariant& stored, Type<int>);
std::optional<quint64> decode(const QVariant& stored, Type<quint64>);
std::optional<DeviceChoice> decode(const QVariant& stored, Type<DeviceChoice>);
inline QVariant encode(const QString& v) {
  return v;
}
inline QVariant encode(const QByteArray& v) {
  return v;
}
inline QVariant encode(double v) {
  return v;
}
inline QVariant encode(int v) {
  return v;
}
inline QVariant encode(quint64 v) {
  return QVariant::fromValue<qulonglong>(v);
}
QVariant encode(DeviceChoice v);
}  // namespace setting_codec

// Reads and writes the table's values in a QSettings it does not own (the program passes its
// per-user file, tests a temporary INI file). GUI thread only, like QSettings shared between
// widgets.
class Settings : public QObject {
  Q_OBJECT

 public:
  explicit Settings(QSettings* store, QObject* parent = nullptr);

  template <typename T>
  T value(const SettingKey<T>& setting) const {
    const std::optional<T> stored =
        setting_codec::decode(read(setting.key), setting_codec::Type<T>{});
    if (!stored || (setting.accepts && !setting.accepts(*stored))) return setting.defaultValue;
    return *stored;
  }

  // False (and nothing written) when the value is outside what the setting accepts.
  template <typename T>
  bool setValue(const SettingKey<T>& setting, const T& value) {
    if (setting.accepts && !setting.accepts(value)) return false;
    const bool differs = this->value(setting) != value;
    write(setting.key, setting_codec::encode(value), differs);
    return true;
  }

  QString modelFolder() const { return value(setting::modelFolder); }
  void setModelFolder(const QString& folder) { setValue(setting::modelFolder, folder); }
  DeviceChoice device() const { return value(setting::device); }
  void setDevice(DeviceChoice device) { setValue(setting::device, device); }
  double temperature() const { return value(setting::temperature); }
  bool setTemperature(double t) { return setValue(setting::temperature, t); }
  int topK() const { return value(setting::topK); }
  bool setTopK(int k) { return setValue(setting::topK, k); }
  double topP() const { return value(setting::topP); }
  bool setTopP(double p) { return setValue(setting::topP, p); }
  double repetitionPenalty() const { return value(setting::repetitionPenalty); }
  bool setRepetitionPenalty(double penalty) {
    return setValue(setting::repetitionPenalty, penalty);
  }
  quint64 seed() const { return value(setting::seed); }
  void setSeed(quint64 seed) { setValue(setting::seed, seed); }
  int maxNewTokens() const { return value(setting::maxNewTokens); }
  bool setMaxNewTokens(int n) { return setValue(setting::maxNewTokens, n); }
  int cameraIntervalSeconds() const { return value(setting::cameraIntervalSeconds); }
  bool setCameraIntervalSeconds(int s) { return setValue(setting::cameraIntervalSeconds, s); }
  int cameraDeviceIndex() const { return value(setting::cameraDeviceIndex); }
  bool setCameraDeviceIndex(int index) { return setValue(setting::cameraDeviceIndex, index); }
  QByteArray windowGeometry() const { return value(setting::windowGeometry); }
  void setWindowGeometry(const QByteArray& g) { setValue(setting::windowGeometry, g); }
  QByteArray windowState() const { return value(setting::windowState); }
  void setWindowState(const QByteArray& s) { setValue(setting::windowState, s); }
  QString lastImageFolder() const { return value(setting::lastImageFolder); }
  void setLastImageFolder(const QString& folder) { setValue(setting::lastImageFolder, folder); }

  // Every value in the table back to its default. Keys outside the table are left alone.
  void reset();
  // Writes pending changes to disk now (QSettings otherwise does it later or at exit).
  void sync();

 signals:
  // After a stored value changed; `key` is the setting's key, e.g. setting::topK.key.
  void changed(const QString& key);

 private:
  QVariant read(const char* key) const;
  void write(const char* key, const QVariant& value, bool announce);

  template <typename T>
  void resetOne(const SettingKey<T>& setting);

  QSettings* store_;
};

}  // namespace mlmamba::ui
