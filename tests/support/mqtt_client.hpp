//! A real MQTT client (libmosquitto, its own network thread) for tests: the "cloud side"
//! subscriber and publisher against a test broker, over TLS with a client certificate.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct mosquitto;
struct mosquitto_message;

namespace canopy::test {

class MqttClient {
 public:
  struct Options {
    int port = 0;
    std::string client_id;
    /// TLS with a client certificate when cafile is set.
    std::filesystem::path cafile;
    std::filesystem::path certfile;
    std::filesystem::path keyfile;
    bool clean_session = true;
  };
  struct Message {
    std::string topic;
    std::string payload;
    int qos = 0;
    bool retain = false;
  };

  /// Connects to 127.0.0.1 (20 s at most). Throws std::runtime_error when it cannot.
  explicit MqttClient(Options options);
  ~MqttClient();
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  /// Subscribes and waits for the SUBACK (10 s at most); false if it did not come.
  bool subscribe(const std::string& filter, int qos);
  /// Publishes and waits until the broker has it (PUBACK for QoS 1; 10 s at most).
  bool publish(const std::string& topic, const std::string& payload, int qos, bool retain = false);

  /// Every message received so far.
  std::vector<Message> messages() const;
  std::size_t count() const;
  /// Waits until at least n messages arrived; false at the deadline.
  bool wait_for(std::size_t n, std::chrono::milliseconds deadline);

 private:
  static void on_message(mosquitto*, void* self, const mosquitto_message* m);
  static void on_subscribe(mosquitto*, void* self, int mid, int, const int*);
  static void on_publish(mosquitto*, void* self, int mid);
  static void on_connect(mosquitto*, void* self, int rc);

  mosquitto* mosq_ = nullptr;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Message> messages_;
  std::vector<int> acked_mids_;
  std::optional<int> connack_;
};

}  // namespace canopy::test
