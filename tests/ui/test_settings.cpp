#include <QFile>
#include <QSettings>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTest>

#include <memory>

#include "settings.h"

using namespace mlmamba::ui;

class TestSettings : public QObject {
  Q_OBJECT

 private:
  QTemporaryDir dir_;
  std::unique_ptr<QSettings> ini_;

  QString iniPath() const { return dir_.filePath(QStringLiteral("settings.ini")); }

 private slots:
  void init() {
    QFile::remove(iniPath());
    ini_ = std::make_unique<QSettings>(iniPath(), QSettings::IniFormat);
  }
  void cleanup() { ini_.reset(); }

  void defaultsOnAnEmptyFile() {
    Settings s(ini_.get());
    QVERIFY(s.modelFolder().isEmpty());
    QCOMPARE(s.device(), DeviceChoice::Auto);
    QCOMPARE(s.temperature(), 0.0);
    QCOMPARE(s.topK(), 0);
    QCOMPARE(s.topP(), 1.0);
    QCOMPARE(s.repetitionPenalty(), 1.0);
    QCOMPARE(s.seed(), quint64(0));
    QCOMPARE(s.maxNewTokens(), 0);
    QCOMPARE(s.cameraIntervalSeconds(), 5);
    QCOMPARE(s.cameraDeviceIndex(), 0);
    QVERIFY(s.windowGeometry().isEmpty());
    QVERIFY(s.windowState().isEmpty());
    QVERIFY(s.lastImageFolder().isEmpty());
    // Reading never writes.
    QVERIFY(ini_->allKeys().isEmpty());
  }

  void valuesSurviveAReopen() {
    static const char raw[] = "\x01\xd9\xd0\xcb\x00\x03\x00\x00 binary\n=,;";
    const QByteArray geometry(raw, sizeof raw - 1);
    {
      Settings s(ini_.get());
      s.setModelFolder(QStringLiteral("/models/ml-mamba, large"));
      s.setDevice(DeviceChoice::Cuda);
      QVERIFY(s.setTemperature(0.7));
      QVERIFY(s.setTopK(40));
      QVERIFY(s.setTopP(0.9));
      QVERIFY(s.setRepetitionPenalty(1.15));
      s.setSeed(18446744073709551615ULL);
      QVERIFY(s.setMaxNewTokens(256));
      QVERIFY(s.setCameraIntervalSeconds(12));
      QVERIFY(s.setCameraDeviceIndex(2));
      s.setWindowGeometry(geometry);
      s.setWindowState(QByteArray(300, '\xff'));
      s.setLastImageFolder(QStringLiteral("/home/me/Pictures/ünïcode"));
      s.sync();
    }
    ini_ = std::make_unique<QSettings>(iniPath(), QSettings::IniFormat);
    Settings s(ini_.get());
    QCOMPARE(s.modelFolder(), QStringLiteral("/models/ml-mamba, large"));
    QCOMPARE(s.device(), DeviceChoice::Cuda);
    QCOMPARE(s.temperature(), 0.7);
    QCOMPARE(s.topK(), 40);
    QCOMPARE(s.topP(), 0.9);
    QCOMPARE(s.repetitionPenalty(), 1.15);
    QCOMPARE(s.seed(), quint64(18446744073709551615ULL));
    QCOMPARE(s.maxNewTokens(), 256);
    QCOMPARE(s.cameraIntervalSeconds(), 12);
    QCOMPARE(s.cameraDeviceIndex(), 2);
    QCOMPARE(s.windowGeometry(), geometry);
    QCOMPARE(s.windowState(), QByteArray(300, '\xff'));
    QCOMPARE(s.lastImageFolder(), QStringLiteral("/home/me/Pictures/ünïcode"));
  }

  void keysAreTheDeclaredOnes() {
    Settings s(ini_.get());
    s.setDevice(DeviceChoice::Cpu);
    QVERIFY(s.setTopK(7));
    QCOMPARE(ini_->value(QStringLiteral("model/device")).toString(), QStringLiteral("cpu"));
    QCOMPARE(ini_->value(QStringLiteral("sampling/top_k")).toInt(), 7);
    QCOMPARE(s.value(setting::topK), 7);
  }

  void unacceptableValuesAreRefused() {
    Settings s(ini_.get());
    QVERIFY(!s.setTemperature(-0.5));
    QVERIFY(!s.setTemperature(std::numeric_limits<double>::infinity()));
    QVERIFY(!s.setTopK(-1));
    QVERIFY(!s.setTopP(0.0));
    QVERIFY(!s.setTopP(1.5));
    QVERIFY(!s.setRepetitionPenalty(0.0));
    QVERIFY(!s.setMaxNewTokens(-3));
    QVERIFY(!s.setCameraIntervalSeconds(0));
    QVERIFY(!s.setCameraDeviceIndex(-1));
    QVERIFY(ini_->allKeys().isEmpty());
    QCOMPARE(s.topP(), 1.0);
    QCOMPARE(s.cameraIntervalSeconds(), 5);
  }

  void handEditedNonsenseReadsAsTheDefault() {
    {
      QFile f(iniPath());
      QVERIFY(f.open(QIODevice::WriteOnly));
      f.write(
          "[model]\ndevice=quantum\nfolder=/a, /b\n"
          "[sampling]\ntemperature=warm\ntop_k=-4\ntop_p=7\nrepetition_penalty=1.3\nseed=-1\n"
          "[camera]\ninterval_seconds=0\ndevice_index=one\n"
          "[generation]\nmax_new_tokens=12.5\n");
    }
    ini_ = std::make_unique<QSettings>(iniPath(), QSettings::IniFormat);
    Settings s(ini_.get());
    QCOMPARE(s.device(), DeviceChoice::Auto);
    QCOMPARE(s.temperature(), 0.0);
    QCOMPARE(s.topK(), 0);
    QCOMPARE(s.topP(), 1.0);
    QCOMPARE(s.repetitionPenalty(), 1.3);  // the one sensible value is kept
    QCOMPARE(s.seed(), quint64(0));
    QCOMPARE(s.cameraIntervalSeconds(), 5);
    QCOMPARE(s.cameraDeviceIndex(), 0);
    QCOMPARE(s.maxNewTokens(), 0);
    // An unquoted comma reads back as a list in INI files; the folder name is put back together.
    QCOMPARE(s.modelFolder(), QStringLiteral("/a, /b"));
  }

  void deviceNamesRoundTrip() {
    for (DeviceChoice d : {DeviceChoice::Auto, DeviceChoice::Cpu, DeviceChoice::Cuda})
      QCOMPARE(deviceChoiceFromName(deviceChoiceName(d)), std::optional<DeviceChoice>(d));
    QCOMPARE(deviceChoiceFromName(u" CUDA "), std::optional<DeviceChoice>(DeviceChoice::Cuda));
    QVERIFY(!deviceChoiceFromName(u"gpu").has_value());
  }

  void changesAreAnnouncedOnce() {
    Settings s(ini_.get());
    QSignalSpy changed(&s, &Settings::changed);
    QVERIFY(s.setTopK(5));
    QVERIFY(s.setTopK(5));  // same value: no second signal
    QVERIFY(!s.setTopK(-5));
    QCOMPARE(changed.count(), 1);
    QCOMPARE(changed.at(0).at(0).toString(), QString::fromLatin1(setting::topK.key));
    s.setDevice(DeviceChoice::Cpu);
    QCOMPARE(changed.count(), 2);
    QCOMPARE(changed.at(1).at(0).toString(), QStringLiteral("model/device"));
  }

  void resetRestoresEveryDefaultAndKeepsForeignKeys() {
    ini_->setValue(QStringLiteral("other/module"), 42);
    Settings s(ini_.get());
    s.setModelFolder(QStringLiteral("/m"));
    QVERIFY(s.setTemperature(1.0));
    QVERIFY(s.setTopK(0));  // written, but equal to the default
    s.setWindowGeometry("g");
    QVERIFY(s.setCameraIntervalSeconds(9));
    QSignalSpy changed(&s, &Settings::changed);
    s.reset();
    QVERIFY(s.modelFolder().isEmpty());
    QCOMPARE(s.temperature(), 0.0);
    QVERIFY(s.windowGeometry().isEmpty());
    QCOMPARE(s.cameraIntervalSeconds(), 5);
    QCOMPARE(ini_->allKeys(), QStringList{QStringLiteral("other/module")});
    QStringList announced;
    for (const QList<QVariant>& args : changed) announced << args.at(0).toString();
    announced.sort();
    QCOMPARE(announced, (QStringList{"camera/interval_seconds", "model/folder",
                                     "sampling/temperature", "window/geometry"}));
  }

  void everyKeyIsDistinct() {
    QStringList keys;
    std::apply([&](const auto&... each) { (keys.append(QString::fromLatin1(each.key)), ...); },
               setting::all);
    QCOMPARE(keys.size(), 13);
    keys.removeDuplicates();
    QCOMPARE(keys.size(), 13);
  }
};

QTEST_GUILESS_MAIN(TestSettings)
#include "test_settings.moc"
