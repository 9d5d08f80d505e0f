#include "settings.h"

#include <QSettings>
#include <QStringList>

#include <tuple>

namespace mlmamba::ui {

QString deviceChoiceName(DeviceChoice device) {
  switch (device) {
    case DeviceChoice::Auto:
      return QStringLiteral("auto");
    case DeviceChoice::Cpu:
      return QStringLiteral("cpu");
    case DeviceChoice::Cuda:
      return QStringLiteral("cuda");
  }
  return QStringLiteral("auto");
}

std::optional<DeviceChoice> deviceChoiceFromName(QStringView name) {
  const QStringView trimmed = name.trimmed();
  for (DeviceChoice d : {DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda}) {
    if (trimmed.compare(deviceChoiceName(d), Qt::CaseInsensitive) == 0) return d;
  }
  return std::nullopt;
}

namespace setting_codec {

// INI files hand every value back as text, and read an unquoted comma as a list, so a folder name
// with a comma typed into the file by hand comes back as a QStringList.
std::optional<QString> decode(const QVariant& stored, Type<QString>) {
  if (!stored.isValid()) return std::nullopt;
  if (stored.metaType().id() == QMetaType::QStringList) return stored.toStringList().join(", ");
  if (!stored.canConvert<QString>()) return std::nullopt;
  return stored.toString();
}

std::optional<QByteArray> decode(const QVariant& stored, Type<QByteArray>) {
  if (!stored.isValid() || !stored.canConvert<QByteArray>()) return std::nullopt;
  return stored.toByteArray();
}

std::optional<double> decode(const QVariant& stored, Type<double>) {
  if (!stored.isValid()) return std::nullopt;
  bool ok = false;
  const double v = stored.toDouble(&ok);
  if (!ok) return std::nullopt;
  return v;
}

std::optional<int> decode(const QVariant& stored, Type<int>) {
  if (!stored.isValid()) return std::nullopt;
  bool ok = false;
  const int v = stored.toInt(&ok);
  if (!ok) return std::nullopt;
  return v;
}

std::optional<quint64> decode(const QVariant& stored, Type<quint64>) {
  if (!stored.isValid()) return std::nullopt;
  bool ok = false;
  const qulonglong v = stored.toULongLong(&ok);
  if (!ok) return std::nullopt;
  return v;
}

std::optional<DeviceChoice> decode(const QVariant& stored, Type<DeviceChoice>) {
  if (!stored.isValid() || !stored.canConvert<QString>()) return std::nullopt;
  return deviceChoiceFromName(stored.toString());
}

QVariant encode(DeviceChoice v) {
  return deviceChoiceName(v);
}

}  // namespace setting_codec

Settings::Settings(QSettings* store, QObject* parent) : QObject(parent), store_(store) {
  Q_ASSERT(store_);
}

QVariant Settings::read(const char* key) const {
  return store_->value(QLatin1String(key));
}

void Settings::write(const char* key, const QVariant& value, bool announce) {
  store_->setValue(QLatin1String(key), value);
  if (announce) emit changed(QLatin1String(key));
}

template <typename T>
void Settings::resetOne(const SettingKey<T>& setting) {
  // Listeners hear only about values that really move: removing a key that held the default (or
  // an unusable value, which already read as the default) changes nothing they can see.
  const bool moves = value(setting) != setting.defaultValue;
  store_->remove(QLatin1String(setting.key));
  if (moves) emit changed(QLatin1String(setting.key));
}

void Settings::reset() {
  std::apply([this](const auto&... each) { (resetOne(each), ...); }, setting::all);
}

void Settings::sync() {
  store_->sync();
}

}  // namespace mlmamba::ui
