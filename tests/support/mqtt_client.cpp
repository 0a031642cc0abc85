#include "support/mqtt_client.hpp"

#include <algorithm>
#include <stdexcept>

#include <mosquitto.h>

namespace canopy::test {

namespace {
struct LibInit {
  LibInit() { mosquitto_lib_init(); }
};
}  // namespace

MqttClient::MqttClient(Options o) {
  static LibInit init;
  mosq_ = mosquitto_new(o.client_id.c_str(), o.clean_session, this);
  if (mosq_ == nullptr) throw std::runtime_error("mosquitto_new failed");
  mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_message_callback_set(mosq_, &MqttClient::on_message);
  mosquitto_subscribe_callback_set(mosq_, &MqttClient::on_subscribe);
  mosquitto_publish_callback_set(mosq_, &MqttClient::on_publish);
  mosquitto_connect_callback_set(mosq_, &MqttClient::on_connect);
  mosquitto_max_inflight_messages_set(mosq_, 0);
  if (!o.cafile.empty()) {
    const int rc = mosquitto_tls_set(mosq_, o.cafile.c_str(), nullptr, o.certfile.empty() ? nullptr : o.certfile.c_str(),
                                     o.keyfile.empty() ? nullptr : o.keyfile.c_str(), nullptr);
    if (rc != MOSQ_ERR_SUCCESS) throw std::runtime_error(std::string("mosquitto_tls_set: ") + mosquitto_strerror(rc));
  }
  int rc = mosquitto_connect(mosq_, "127.0.0.1", o.port, 30);
  if (rc != MOSQ_ERR_SUCCESS) throw std::runtime_error(std::string("mosquitto_connect: ") + mosquitto_strerror(rc));
  mosquitto_loop_start(mosq_);
  std::unique_lock lock(mutex_);
  if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return connack_.has_value(); }) || *connack_ != 0) {
    lock.unlock();
    mosquitto_disconnect(mosq_);
    mosquitto_loop_stop(mosq_, true);
    mosquitto_destroy(mosq_);
    mosq_ = nullptr;
    throw std::runtime_error("the test MQTT client could not connect");
  }
}

MqttClient::~MqttClient() {
  if (mosq_ == nullptr) return;
  mosquitto_disconnect(mosq_);
  mosquitto_loop_stop(mosq_, true);
  mosquitto_destroy(mosq_);
}

void MqttClient::on_connect(mosquitto*, void* self, int rc) {
  auto* c = static_cast<MqttClient*>(self);
  std::lock_guard lock(c->mutex_);
  c->connack_ = rc;
  c->cv_.notify_all();
}

void MqttClient::on_message(mosquitto*, void* self, const mosquitto_message* m) {
  auto* c = static_cast<MqttClient*>(self);
  Message msg{m->topic, std::string(static_cast<const char*>(m->payload), static_cast<std::size_t>(m->payloadlen)),
              m->qos, m->retain};
  std::lock_guard lock(c->mutex_);
  c->messages_.push_back(std::move(msg));
  c->cv_.notify_all();
}

void MqttClient::on_subscribe(mosquitto*, void* self, int mid, int, const int*) {
  auto* c = static_cast<MqttClient*>(self);
  std::lock_guard lock(c->mutex_);
  c->acked_mids_.push_back(mid);
  c->cv_.notify_all();
}

void MqttClient::on_publish(mosquitto*, void* self, int mid) { on_subscribe(nullptr, self, mid, 0, nullptr); }

bool MqttClient::subscribe(const std::string& filter, int qos) {
  int mid = 0;
  if (mosquitto_subscribe(mosq_, &mid, filter.c_str(), qos) != MOSQ_ERR_SUCCESS) return false;
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
    return std::find(acked_mids_.begin(), acked_mids_.end(), mid) != acked_mids_.end();
  });
}

bool MqttClient::publish(const std::string& topic, const std::string& payload, int qos, bool retain) {
  int mid = 0;
  if (mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()), payload.data(), qos, retain) !=
      MOSQ_ERR_SUCCESS)
    return false;
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, std::chrono::seconds(10), [&] {
    return std::find(acked_mids_.begin(), acked_mids_.end(), mid) != acked_mids_.end();
  });
}

std::vector<MqttClient::Message> MqttClient::messages() const {
  std::lock_guard lock(mutex_);
  return messages_;
}

std::size_t MqttClient::count() const {
  std::lock_guard lock(mutex_);
  return messages_.size();
}

bool MqttClient::wait_for(std::size_t n, std::chrono::milliseconds deadline) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, deadline, [&] { return messages_.size() >= n; });
}

}  // namespace canopy::test
