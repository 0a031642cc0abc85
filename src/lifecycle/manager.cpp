// The lifecycle manager: an event-driven state machine per component. Every transition is a
// method call on the executor; processes report back through Launcher callbacks and timers.
// A component's `gen` counter invalidates callbacks of steps that were superseded (a stop while
// a step runs), so a late exit never moves a component that has moved on.
#include "canopy/lifecycle/manager.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <deque>
#include <set>

#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "canopy/config/store.hpp"
#include "canopy/core/log.hpp"
#include "canopy/recipe/interpolate.hpp"

namespace canopy::lifecycle {
namespace net = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string_view to_string(State s) {
  switch (s) {
    case State::new_: return "NEW";
    case State::installed: return "INSTALLED";
    case State::starting: return "STARTING";
    case State::running: return "RUNNING";
    case State::stopping: return "STOPPING";
    case State::finished: return "FINISHED";
    case State::errored: return "ERRORED";
    case State::broken: return "BROKEN";
  }
  return "UNKNOWN";
}

namespace {

// Greengrass's default step timeouts (README_CONFIG_SCHEMA.md).
constexpr auto kBootstrapTimeout = 120s;
constexpr auto kInstallTimeout = 120s;
constexpr auto kStartupTimeout = 120s;
constexpr auto kShutdownTimeout = 15s;
constexpr auto kRecoverTimeout = 60s;
constexpr auto kPollInterval = 25ms;

bool on_path(const std::string& exe, const std::string& path_var) {
  if (exe.find('/') != std::string::npos) return ::access(exe.c_str(), X_OK) == 0;
  std::size_t start = 0;
  while (start <= path_var.size()) {
    const auto end = std::min(path_var.find(':', start), path_var.size());
    const std::string dir = path_var.substr(start, end - start);
    if (!dir.empty() && ::access((fs::path(dir) / exe).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

struct Manager::Impl {
  struct Component {
    ComponentSpec spec;
    recipe::Lifecycle lc;  // interpolated at the last start
    State state = State::new_;
    std::string status_code;
    std::string status_reason;
    bool in_target = true;          // false: being removed
    bool desired_running = true;    // false after `component stop`
    bool needs_bootstrap = false;   // a deployment installed or changed it
    bool busy = false;              // a step or a stop is in progress
    bool paused = false;
    bool reported = false;          // UpdateState arrived during STARTING
    State errored_from = State::new_;
    pid_t main_pgid = 0;            // Startup's or Run's process group
    pid_t step_pgid = 0;            // the one-shot step running now
    std::uint64_t gen = 0;
    std::uint32_t restart_count = 0;
    std::deque<Clock::time_point> errors;
    std::shared_ptr<ComponentLog> log;
    std::unique_ptr<net::steady_timer> timer;
    std::string token;
    std::optional<RunAs> run_as;
    fs::path cgroup;  // empty: no resource limits
    std::vector<std::function<void()>> on_stopped;  // waiting for the current stop
  };

  Impl(net::any_io_executor ex, ManagerSettings s, config::ConfigStore& st, Launcher& l, ProcessTable& p,
       ManagerHooks h)
      : executor(std::move(ex)), settings(std::move(s)), store(st), launcher(l), processes(p), hooks(std::move(h)),
        log(log::get("lifecycle")) {}

  net::any_io_executor executor;
  ManagerSettings settings;
  config::ConfigStore& store;
  Launcher& launcher;
  ProcessTable& processes;
  ManagerHooks hooks;
  std::shared_ptr<spdlog::logger> log;
  std::map<std::string, std::unique_ptr<Component>> components;
  bool shutting_down = false;

  Component* find(const std::string& name) {
    auto it = components.find(name);
    return it == components.end() ? nullptr : it->second.get();
  }

  void set_state(Component& c, State s) {
    if (c.state == s) return;
    log->info("component={} version={} state {} -> {}{}", c.spec.name, c.spec.version, to_string(c.state),
              to_string(s), c.status_reason.empty() || (s != State::errored && s != State::broken)
                                ? std::string()
                                : " (" + c.status_reason + ")");
    if (c.log) c.log->line(ComponentLog::Level::info, "canopy", fmt::format("state {}", to_string(s)));
    c.state = s;
    if (hooks.on_state) hooks.on_state(c.spec.name, s);
    // Dependents may now start (or must wait); evaluate later so the hook runs first.
    net::post(executor, [this] { kick(); });
  }

  std::shared_ptr<ComponentLog> component_log(Component& c) {
    if (!c.log) {
      auto l = ComponentLog::open(settings.layout.logs_dir() / (c.spec.name + ".log"), settings.log_file_bytes,
                                  settings.log_files);
      if (l) c.log = *l;
      else log->error("component={} cannot open its log file: {}", c.spec.name, l.error().message);
    }
    return c.log;
  }

  result<RunAs> user_for(const ComponentSpec& spec, bool privileged) const {
    if (privileged || ::geteuid() != 0) {
      RunAs r = current_user();
      return r;
    }
    return resolve_user(spec.posix_user.empty() ? settings.default_posix_user : spec.posix_user);
  }

  recipe::Variables variables(const ComponentSpec& spec, const nlohmann::json& configuration,
                              const std::map<std::string, nlohmann::json>* proposed) const {
    recipe::Variables v;
    v.thing_name = settings.thing_name;
    v.root_path = settings.layout.root.string();
    v.artifacts_path = (settings.layout.artifacts_dir() / spec.name / spec.version).string();
    v.artifacts_decompressed_path = (settings.layout.unarchived_dir() / spec.name / spec.version).string();
    v.work_path = (settings.layout.work_dir() / spec.name).string();
    v.configuration = configuration;
    for (const auto& d : spec.dependencies) {
      recipe::DependencyVariables dv;
      std::string version;
      if (auto it = components.find(d.name); it != components.end()) version = it->second->spec.version;
      dv.artifacts_path = (settings.layout.artifacts_dir() / d.name / version).string();
      dv.artifacts_decompressed_path = (settings.layout.unarchived_dir() / d.name / version).string();
      if (proposed) {
        if (auto it = proposed->find(d.name); it != proposed->end()) dv.configuration = it->second;
      } else if (auto cfg = store.get(config::component_config_path(d.name))) {
        dv.configuration = *cfg;
      }
      v.dependencies[d.name] = std::move(dv);
    }
    return v;
  }

  // ---- starting -------------------------------------------------------------------------

  bool deps_ready(const Component& c) const {
    for (const auto& d : c.spec.dependencies) {
      auto it = components.find(d.name);
      if (it == components.end()) continue;  // check() guarantees presence; a removed one is not waited for
      const State s = it->second->state;
      if (s != State::running && s != State::finished) return false;
    }
    return true;
  }

  // Moves every component that can make progress one step forward.
  void kick() {
    if (shutting_down) return;
    for (auto& [name, c] : components) {
      if (c->busy || !c->in_target || !c->desired_running) continue;
      if (c->state == State::new_ || c->state == State::installed) {
        if (deps_ready(*c)) advance(*c);
      }
    }
  }

  void advance(Component& c) {
    if (c.state == State::new_) {
      if (!prepare(c)) return;
      if (c.needs_bootstrap && c.lc.bootstrap) {
        run_oneshot(c, "bootstrap", *c.lc.bootstrap, kBootstrapTimeout, [this](Component& comp, ExitStatus st, bool timed_out) {
          if (timed_out) return errored(comp, "BOOTSTRAP_TIMEOUT", "the Bootstrap step did not finish in time");
          if (st.code == 100 || st.code == 101) {
            comp.needs_bootstrap = false;
            if (hooks.on_bootstrap_restart) hooks.on_bootstrap_restart(comp.spec.name, st.code);
            return advance(comp);
          }
          if (!st.ok()) return errored(comp, "BOOTSTRAP_ERROR", "the Bootstrap step failed with " + st.describe());
          comp.needs_bootstrap = false;
          advance(comp);
        });
        return;
      }
      if (c.lc.install) {
        run_oneshot(c, "install", *c.lc.install, kInstallTimeout, [this](Component& comp, ExitStatus st, bool timed_out) {
          if (timed_out) return errored(comp, "INSTALL_TIMEOUT", "the Install step did not finish in time");
          if (!st.ok()) return errored(comp, "INSTALL_ERROR", "the Install step failed with " + st.describe());
          set_state(comp, State::installed);
        });
        return;
      }
      set_state(c, State::installed);
      return;
    }
    if (c.state == State::installed) start_main(c);
  }

  // Interpolates the lifecycle with the current configuration, creates the work folder and
  // the component's token. False (and BROKEN) when that cannot be done: retrying would not help.
  bool prepare(Component& c) {
    const auto cfg = store.get(config::component_config_path(c.spec.name)).value_or(nlohmann::json::object());
    auto lc = recipe::interpolate(c.spec.lifecycle, variables(c.spec, cfg, nullptr), c.spec.name);
    if (!lc) {
      broken(c, "INVALID_LIFECYCLE", lc.error().message);
      return false;
    }
    c.lc = std::move(*lc);
    auto ru = user_for(c.spec, false);
    if (!ru) {
      broken(c, "INVALID_USER", ru.error().message);
      return false;
    }
    c.run_as = *ru;
    const fs::path work = settings.layout.work_dir() / c.spec.name;
    std::error_code ec;
    fs::create_directories(work, ec);
    if (ec || ::chmod(work.c_str(), 0750) != 0 || (::geteuid() == 0 && ::chown(work.c_str(), ru->uid, ru->gid) != 0)) {
      broken(c, "WORK_DIR", fmt::format("cannot prepare its work folder {}: {}", work.string(),
                                        ec ? ec.message() : std::strerror(errno)));
      return false;
    }
    c.cgroup.clear();
    if (c.spec.limits.memory_bytes || c.spec.limits.cpus) {
      if (settings.cgroups && settings.cgroups->available()) {
        auto cg = settings.cgroups->prepare(c.spec.name, c.spec.limits);
        if (cg) c.cgroup = *cg;
        else log->error("component={} resource limits are not applied: {}", c.spec.name, cg.error().message);
      } else {
        log->warn("component={} resource limits (memory {} bytes, {} CPUs) are not applied: {}", c.spec.name,
                  c.spec.limits.memory_bytes.value_or(0), c.spec.limits.cpus.value_or(0),
                  settings.cgroups ? settings.cgroups->reason() : std::string("cgroup v2 support is off"));
      }
    }
    if (hooks.issue_token) c.token = hooks.issue_token(c.spec.name, ru->uid);
    if (hooks.allow_socket_group && ::geteuid() == 0) hooks.allow_socket_group(ru->gid);
    component_log(c);
    return true;
  }

  std::map<std::string, std::string> environment(const Component& c, const recipe::Step& step, const RunAs& user) const {
    std::map<std::string, std::string> env;
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    env["HOME"] = user.home.empty() ? "/" : user.home;
    env["USER"] = user.user;
    env["LOGNAME"] = user.user;
    env["LANG"] = "C.UTF-8";
    env["SVCUID"] = c.token;
    env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] = settings.socket_path.string();
    env["AWS_IOT_THING_NAME"] = settings.thing_name;
    env["AWS_REGION"] = settings.region;
    env["AWS_DEFAULT_REGION"] = settings.region;
    env["GGC_VERSION"] = settings.ggc_version;
    env["GG_ROOT_CA_PATH"] = settings.root_ca_path.string();
    // Marks the process as this canopyd's, so the next one finds it even if it was never
    // recorded in processes.json (ProcessTable::stop_marked).
    env["CANOPYD_SUPERVISED_ROOT"] = settings.layout.root.string();
    for (const auto& [k, v] : c.lc.setenv) env[k] = v;
    for (const auto& [k, v] : step.setenv) env[k] = v;
    return env;
  }

  // True when the step's SkipIf says to skip it.
  bool skipped(const Component& c, const recipe::Step& step, const std::map<std::string, std::string>& env) const {
    if (!step.skip_if) return false;
    if (step.skip_if->kind == recipe::SkipIf::Kind::onpath) {
      auto it = env.find("PATH");
      return on_path(step.skip_if->target, it == env.end() ? std::string() : it->second);
    }
    fs::path p = step.skip_if->target;
    if (p.is_relative()) p = settings.layout.work_dir() / c.spec.name / p;
    std::error_code ec;
    return fs::exists(p, ec);
  }

  using StepDone = std::function<void(Component&, ExitStatus, bool timed_out)>;

  std::chrono::seconds step_timeout(const recipe::Step& step, std::chrono::seconds fallback) const {
    return recipe::timeout_seconds(step).value_or(fallback);
  }

  // Spawns one step. Returns the pgid, or 0 after reporting the failure through `done` with
  // exit code 127.
  pid_t spawn_step(Component& c, const std::string& step_name, const recipe::Step& step, std::function<void(ExitStatus)> on_exit) {
    auto user = step.requires_privilege ? result<RunAs>(current_user()) : user_for(c.spec, false);
    if (!user) {
      c.log->line(ComponentLog::Level::error, "canopy", user.error().message);
      net::post(executor, [on_exit] { on_exit(ExitStatus{127, 0}); });
      return 0;
    }
    ProcessSpec ps;
    ps.component = c.spec.name;
    ps.step = step_name;
    ps.script = step.script;
    ps.cwd = settings.layout.work_dir() / c.spec.name;
    ps.env = environment(c, step, *user);
    if (::geteuid() == 0) ps.run_as = *user;
    ps.cgroup = c.cgroup;
    auto pid = launcher.spawn(ps, component_log(c), std::move(on_exit));
    if (!pid) {
      log->error("component={} step={} could not start: {}", c.spec.name, step_name, pid.error().message);
      if (c.log) c.log->line(ComponentLog::Level::error, "canopy", pid.error().message);
      net::post(executor, [cb = std::move(on_exit)] { cb(ExitStatus{127, 0}); });
      return 0;
    }
    processes.add(*pid, c.spec.name, step_name);
    if (c.log) c.log->line(ComponentLog::Level::info, "canopy", fmt::format("{} started (pid {})", step_name, *pid));
    return *pid;
  }

  void run_oneshot(Component& c, const std::string& name, const recipe::Step& step, std::chrono::seconds fallback,
                   StepDone done) {
    const auto env = environment(c, step, c.run_as.value_or(current_user()));
    if (skipped(c, step, env)) {
      log->info("component={} step={} skipped (SkipIf)", c.spec.name, name);
      // Busy until the posted completion runs, so kick() does not start the step again.
      c.busy = true;
      net::post(executor, [this, n = c.spec.name, gen = c.gen, done] {
        auto* comp = find(n);
        if (!comp || comp->gen != gen) return;
        comp->busy = false;
        done(*comp, ExitStatus{0, 0}, false);
      });
      return;
    }
    c.busy = true;
    const auto gen = ++c.gen;
    const std::string comp_name = c.spec.name;
    auto spawned = std::make_shared<pid_t>(0);
    const pid_t pgid = spawn_step(c, name, step, [this, comp_name, gen, done, name, spawned](ExitStatus st) {
      auto* comp = find(comp_name);
      // The Startup group stays recorded while daemons it left behind may live in it.
      if (*spawned && (!comp || comp->main_pgid != *spawned)) processes.remove(*spawned);
      if (!comp) return;
      if (comp->log) comp->log->line(ComponentLog::Level::info, "canopy", fmt::format("{} ended: {}", name, st.describe()));
      if (comp->gen != gen) return;
      comp->step_pgid = 0;
      comp->busy = false;
      if (comp->timer) comp->timer->cancel();
      done(*comp, st, false);
    });
    c.step_pgid = pgid;
    *spawned = pgid;
    if (!pgid) return;
    arm_timer(c, step_timeout(step, fallback), [comp_name, gen, done, pgid](Component& comp) {
      if (comp.gen != gen) return;
      Launcher::signal_group(pgid, SIGKILL);
      ++comp.gen;  // ignore the exit that follows
      comp.busy = false;
      comp.step_pgid = 0;
      done(comp, ExitStatus{-1, SIGKILL}, true);
    });
  }

  void arm_timer(Component& c, std::chrono::steady_clock::duration after, std::function<void(Component&)> fn) {
    c.timer = std::make_unique<net::steady_timer>(executor, after);
    c.timer->async_wait([this, name = c.spec.name, fn = std::move(fn)](const boost::system::error_code& ec) {
      if (ec) return;
      if (auto* comp = find(name)) fn(*comp);
    });
  }

  void start_main(Component& c) {
    c.status_code.clear();
    c.status_reason.clear();
    c.reported = false;
    c.paused = false;
    set_state(c, State::starting);
    if (c.lc.startup) {
      run_oneshot(c, "startup", *c.lc.startup, kStartupTimeout, [this](Component& comp, ExitStatus st, bool timed_out) {
        if (timed_out) return errored(comp, "STARTUP_TIMEOUT", "the Startup step did not finish in time");
        if (!st.ok()) return errored(comp, "STARTUP_ERROR", "the Startup step failed with " + st.describe());
        // The Startup process may leave daemons behind in its group; they are stopped with it.
        if (comp.state == State::starting && !comp.reported) set_state(comp, State::running);
      });
      // Keep the group of the startup process for stopping: its background processes stay in it.
      c.main_pgid = c.step_pgid;
      return;
    }
    if (c.lc.run) {
      const auto env = environment(c, *c.lc.run, c.run_as.value_or(current_user()));
      if (skipped(c, *c.lc.run, env)) {
        log->info("component={} step=run skipped (SkipIf)", c.spec.name);
        set_state(c, State::finished);
        return;
      }
      const auto gen = ++c.gen;
      const std::string name = c.spec.name;
      const pid_t pgid = spawn_step(c, "run", *c.lc.run, [this, name, gen](ExitStatus st) {
        auto* comp = find(name);
        if (!comp) return;
        if (comp->log) comp->log->line(ComponentLog::Level::info, "canopy", "run ended: " + st.describe());
        processes.remove(comp->main_pgid);
        if (comp->gen != gen) return;  // a stop or restart took over
        if (comp->timer) comp->timer->cancel();
        // Leftover children of the Run process go with it.
        Launcher::signal_group(comp->main_pgid, SIGKILL);
        comp->main_pgid = 0;
        if (st.ok()) {
          comp->status_reason = "the Run step exited with code 0";
          set_state(*comp, State::finished);
        } else {
          errored(*comp, "RUN_ERROR", "the Run step failed with " + st.describe());
        }
      });
      c.main_pgid = pgid;
      if (!pgid) return;
      set_state(c, State::running);
      if (auto t = recipe::timeout_seconds(*c.lc.run)) {
        arm_timer(c, *t, [this, gen](Component& comp) {
          if (comp.gen != gen) return;
          errored(comp, "RUN_TIMEOUT", "the Run step did not finish within its Timeout");
        });
      }
      return;
    }
    c.status_reason = "the component has no Startup or Run step";
    set_state(c, State::finished);
  }

  // ---- errors ---------------------------------------------------------------------------

  std::chrono::milliseconds backoff(const Component& c) const {
    auto d = settings.backoff_initial;
    for (std::size_t i = 1; i < c.errors.size() && d < settings.backoff_max; ++i) d *= 2;
    return std::min(d, settings.backoff_max);
  }

  void errored(Component& c, const std::string& code, const std::string& reason) {
    if (c.state == State::errored || c.state == State::broken) return;
    const State from = c.state;
    c.errored_from = (from == State::new_) ? State::new_ : State::installed;
    c.status_code = code;
    c.status_reason = reason;
    ++c.gen;
    if (c.timer) c.timer->cancel();
    const auto now = Clock::now();
    while (!c.errors.empty() && now - c.errors.front() > settings.error_window) c.errors.pop_front();
    c.errors.push_back(now);
    if (c.log) c.log->line(ComponentLog::Level::error, "canopy", reason);
    set_state(c, State::errored);
    stop_dependents(c);
    if (c.errors.size() >= settings.broken_after_errors) {
      broken(c, code,
             fmt::format("{}; it failed {} times within {} s, so it is BROKEN and stays stopped until it is "
                         "redeployed or restarted with `canopy component restart {}`",
                         reason, c.errors.size(), settings.error_window.count(), c.spec.name));
      return;
    }
    // Stop what is left of it, run Recover, wait the backoff, then try again.
    c.busy = true;
    kill_processes(c, [this, name = c.spec.name] {
      auto* comp = find(name);
      if (!comp || comp->state != State::errored) return;
      auto retry = [this, name] {
        auto* cc = find(name);
        if (!cc || cc->state != State::errored) return;
        const auto delay = backoff(*cc);
        log->info("component={} retrying in {} ms (error {} of {} allowed within {} s)", name, delay.count(),
                  cc->errors.size(), settings.broken_after_errors, settings.error_window.count());
        cc->busy = true;
        arm_timer(*cc, delay, [this](Component& x) {
          if (x.state != State::errored) return;
          x.busy = false;
          ++x.restart_count;
          set_state(x, x.errored_from);
        });
      };
      if (comp->lc.recover) {
        comp->busy = false;
        run_oneshot(*comp, "recover", *comp->lc.recover, kRecoverTimeout,
                    [retry](Component&, ExitStatus, bool) { retry(); });
      } else {
        retry();
      }
    });
  }

  void broken(Component& c, const std::string& code, const std::string& reason) {
    c.status_code = code;
    c.status_reason = reason;
    ++c.gen;
    if (c.timer) c.timer->cancel();
    log->error("component={} version={} is BROKEN: {}", c.spec.name, c.spec.version, reason);
    if (c.log) c.log->line(ComponentLog::Level::error, "canopy", "BROKEN: " + reason);
    c.busy = true;
    kill_processes(c, [this, name = c.spec.name] {
      if (auto* comp = find(name)) comp->busy = false;
    });
    set_state(c, State::broken);
    stop_dependents(c);
  }

  // Components with a HARD dependency on `c` stop and wait for it to run again.
  void stop_dependents(Component& c) {
    for (auto& [name, d] : components) {
      if (!d->in_target) continue;
      for (const auto& dep : d->spec.dependencies) {
        if (dep.name != c.spec.name || dep.type != recipe::DependencyType::hard) continue;
        if (d->state == State::running || d->state == State::starting) {
          log->info("component={} restarts because its HARD dependency {} stopped", name, c.spec.name);
          stop_component(*d, State::installed, [] {});
        }
      }
    }
  }

  // ---- stopping -------------------------------------------------------------------------

  // SIGTERM to every group of the component, SIGKILL after the grace period; `done` once all
  // are gone.
  void kill_processes(Component& c, std::function<void()> done) {
    std::vector<pid_t> groups;
    if (c.main_pgid) groups.push_back(c.main_pgid);
    if (c.step_pgid) groups.push_back(c.step_pgid);
    c.main_pgid = 0;
    c.step_pgid = 0;
    for (pid_t g : groups) {
      Launcher::signal_group(g, SIGCONT);  // a paused group must be able to die
      Launcher::signal_group(g, SIGTERM);
    }
    wait_gone(groups, Clock::now() + settings.stop_grace, false, c.spec.name, 1ms,
              [this, groups, done = std::move(done)] {
                for (pid_t g : groups) processes.remove(g);
                done();
              });
  }

  // Polls until every group is gone: first after `delay`, doubling up to kPollInterval (most
  // processes die within a millisecond of SIGTERM; a stubborn one is polled gently).
  void wait_gone(std::vector<pid_t> groups, Clock::time_point deadline, bool killed, const std::string& name,
                 std::chrono::milliseconds delay, std::function<void()> done) {
    std::erase_if(groups, [](pid_t g) { return !Launcher::group_alive(g); });
    if (groups.empty()) return done();
    if (Clock::now() >= deadline) {
      if (killed) {
        log->error("component={} processes {} survive SIGKILL; giving up waiting", name, groups.front());
        return done();
      }
      log->warn("component={} did not stop within {} ms of SIGTERM; sending SIGKILL", name,
                settings.stop_grace.count());
      for (pid_t g : groups) Launcher::signal_group(g, SIGKILL);
      deadline = Clock::now() + 2s;
      killed = true;
    }
    auto t = std::make_shared<net::steady_timer>(executor, delay);
    const auto next = std::min<std::chrono::milliseconds>(delay * 2, kPollInterval);
    t->async_wait([this, t, groups = std::move(groups), deadline, killed, name, next, done = std::move(done)](
                      const boost::system::error_code&) mutable {
      wait_gone(std::move(groups), deadline, killed, name, next, std::move(done));
    });
  }

  // Runs Shutdown (while the main process still runs), then stops the processes; the component
  // ends in `final_state`. `done` runs after.
  void stop_component(Component& c, State final_state, std::function<void()> done) {
    const bool active = c.state == State::running || c.state == State::starting || c.main_pgid || c.step_pgid;
    if (c.state == State::stopping) {
      c.on_stopped.push_back(std::move(done));
      return;
    }
    ++c.gen;
    if (c.timer) c.timer->cancel();
    if (!active) {
      // Nothing runs: only an ERRORED component waiting for its retry changes state (the
      // retry is cancelled by the gen bump above).
      c.busy = false;
      if (c.state == State::errored) set_state(c, c.errored_from == State::new_ ? State::new_ : final_state);
      return done();
    }
    c.on_stopped.push_back(std::move(done));
    c.busy = true;
    set_state(c, State::stopping);
    stop_dependents(c);
    const std::string name = c.spec.name;
    auto finish = [this, name, final_state] {
      auto* comp = find(name);
      if (!comp) return;
      kill_processes(*comp, [this, name, final_state] {
        auto* cc = find(name);
        if (!cc) return;
        cc->busy = false;
        cc->paused = false;
        set_state(*cc, final_state);
        auto waiters = std::move(cc->on_stopped);
        cc->on_stopped.clear();
        for (auto& w : waiters) w();
      });
    };
    if (c.lc.shutdown) {
      if (c.main_pgid) Launcher::signal_group(c.main_pgid, SIGCONT);
      const pid_t main = c.main_pgid;
      c.busy = false;
      run_oneshot(c, "shutdown", *c.lc.shutdown, kShutdownTimeout, [finish, main](Component& comp, ExitStatus, bool) {
        comp.main_pgid = main;
        comp.busy = true;
        finish();
      });
      c.main_pgid = main;
      c.busy = true;
    } else {
      finish();
    }
  }

  // Stops `names` so that a component stops only after every component that depends on it.
  void stop_ordered(std::set<std::string> names, State final_state, std::function<void()> done) {
    if (names.empty()) return done();
    auto remaining = std::make_shared<std::set<std::string>>(std::move(names));
    auto in_flight = std::make_shared<std::set<std::string>>();
    auto finished = std::make_shared<bool>(false);
    auto step = std::make_shared<std::function<void()>>();
    *step = [this, remaining, in_flight, finished, step, final_state, done] {
      if (*finished) return;
      if (remaining->empty() && in_flight->empty()) {
        *finished = true;
        // Break the self-reference after the call.
        net::post(executor, [step, done] {
          *step = nullptr;
          done();
        });
        return;
      }
      std::vector<std::string> ready;
      for (const auto& n : *remaining) {
        bool has_dependent = false;
        for (const auto& other : *remaining) {
          if (other == n) continue;
          auto* o = find(other);
          if (!o) continue;
          for (const auto& d : o->spec.dependencies)
            if (d.name == n) has_dependent = true;
        }
        for (const auto& other : *in_flight) {
          auto* o = find(other);
          if (!o) continue;
          for (const auto& d : o->spec.dependencies)
            if (d.name == n) has_dependent = true;
        }
        if (!has_dependent) ready.push_back(n);
      }
      if (ready.empty() && in_flight->empty()) ready.push_back(*remaining->begin());  // a cycle: just go
      for (const auto& n : ready) {
        remaining->erase(n);
        auto* c = find(n);
        if (!c) continue;
        in_flight->insert(n);
        stop_component(*c, final_state, [in_flight, n, step] {
          in_flight->erase(n);
          if (*step) (*step)();
        });
      }
    };
    (*step)();
  }

  void remove_component(const std::string& name) {
    auto it = components.find(name);
    if (it == components.end()) return;
    if (hooks.revoke_token) hooks.revoke_token(name);
    // Its cgroup goes too (after the stop it is empty; anything left in it is killed first).
    if (settings.cgroups) settings.cgroups->kill_and_remove(name);
    log->info("component={} removed", name);
    components.erase(it);
  }
};

Manager::Manager(net::any_io_executor executor, ManagerSettings settings, config::ConfigStore& store, Launcher& launcher,
                 ProcessTable& processes, ManagerHooks hooks)
    : impl_(std::make_unique<Impl>(std::move(executor), std::move(settings), store, launcher, processes,
                                   std::move(hooks))) {}

Manager::~Manager() = default;

result<std::vector<std::string>> Manager::order(const std::vector<ComponentSpec>& specs) {
  std::map<std::string, const ComponentSpec*> by_name;
  for (const auto& s : specs) by_name[s.name] = &s;
  std::vector<std::string> out;
  std::map<std::string, int> mark;  // 1 visiting, 2 done
  std::vector<std::string> stack;
  std::function<result<void>(const std::string&)> visit = [&](const std::string& n) -> result<void> {
    if (mark[n] == 2) return ok();
    if (mark[n] == 1) {
      auto it = std::find(stack.begin(), stack.end(), n);
      std::string cycle;
      for (; it != stack.end(); ++it) cycle += *it + " -> ";
      return make_error(errc::invalid, fmt::format("dependency cycle: {}{}", cycle, n));
    }
    mark[n] = 1;
    stack.push_back(n);
    if (auto it = by_name.find(n); it != by_name.end())
      for (const auto& d : it->second->dependencies)
        if (by_name.count(d.name))
          if (auto r = visit(d.name); !r) return r;
    stack.pop_back();
    mark[n] = 2;
    out.push_back(n);
    return ok();
  };
  for (const auto& s : specs)
    if (auto r = visit(s.name); !r) return r.error();
  return out;
}

result<void> Manager::check(const std::vector<ComponentSpec>& target,
                            const std::map<std::string, nlohmann::json>& configuration) const {
  if (auto o = order(target); !o) return o.error();
  std::set<std::string> names;
  for (const auto& s : target) names.insert(s.name);
  for (const auto& s : target) {
    for (const auto& d : s.dependencies)
      if (!names.count(d.name))
        return make_error(errc::invalid, fmt::format("{} depends on {}, which is not part of the deployment", s.name, d.name));
    if (::geteuid() == 0)
      if (auto u = resolve_user(s.posix_user.empty() ? impl_->settings.default_posix_user : s.posix_user); !u)
        return make_error(u.error().code, fmt::format("{}: {}", s.name, u.error().message));
    auto cfg_it = configuration.find(s.name);
    const auto cfg = cfg_it == configuration.end() ? nlohmann::json::object() : cfg_it->second;
    if (auto lc = recipe::interpolate(s.lifecycle, impl_->variables(s, cfg, &configuration), s.name); !lc)
      return lc.error();
  }
  return ok();
}

result<void> Manager::update(std::vector<ComponentSpec> target, std::function<void()> stopped, bool from_deployment) {
  auto& m = *impl_;
  std::map<std::string, ComponentSpec> wanted;
  for (auto& s : target) wanted[s.name] = std::move(s);
  std::set<std::string> to_stop;
  for (auto& [name, c] : m.components) {
    auto it = wanted.find(name);
    if (it == wanted.end()) {
      c->in_target = false;
      to_stop.insert(name);
    } else if (it->second.fingerprint != c->spec.fingerprint) {
      to_stop.insert(name);
    }
  }
  m.stop_ordered(to_stop, State::finished, [this, wanted = std::move(wanted), stopped = std::move(stopped),
                                             from_deployment]() mutable {
    auto& mm = *impl_;
    std::vector<std::string> gone;
    for (auto& [name, c] : mm.components)
      if (!c->in_target) gone.push_back(name);
    for (const auto& n : gone) mm.remove_component(n);
    for (auto& [name, spec] : wanted) {
      auto* c = mm.find(name);
      if (!c) {
        auto nc = std::make_unique<Impl::Component>();
        nc->spec = std::move(spec);
        nc->needs_bootstrap = from_deployment;
        mm.components[name] = std::move(nc);
        continue;
      }
      const bool changed = c->spec.fingerprint != spec.fingerprint;
      c->spec = std::move(spec);
      c->desired_running = true;
      if (changed) {
        c->needs_bootstrap = from_deployment;
        c->errors.clear();
        c->status_code.clear();
        c->status_reason.clear();
        c->state = State::new_;
        if (mm.hooks.on_state) mm.hooks.on_state(name, State::new_);
      } else if (c->state == State::broken || c->state == State::errored) {
        c->errors.clear();
        c->status_code.clear();
        c->status_reason.clear();
        ++c->gen;
        c->busy = false;
        c->state = State::new_;
        if (mm.hooks.on_state) mm.hooks.on_state(name, State::new_);
      }
    }
    if (stopped) stopped();
    mm.kick();
  });
  return ok();
}

void Manager::stop_all(std::function<void()> done) {
  auto& m = *impl_;
  m.shutting_down = true;
  std::set<std::string> names;
  for (const auto& [name, c] : m.components) names.insert(name);
  m.stop_ordered(std::move(names), State::finished, std::move(done));
}

result<void> Manager::restart(const std::string& name) {
  auto& m = *impl_;
  auto* c = m.find(name);
  if (!c) return make_error(errc::not_found, fmt::format("component {} is not deployed on this device", name));
  c->desired_running = true;
  c->errors.clear();
  m.log->info("component={} restart requested", name);
  if (c->state == State::broken || c->state == State::errored) {
    ++c->gen;
    c->busy = false;
    c->status_code.clear();
    c->status_reason.clear();
    ++c->restart_count;
    m.set_state(*c, c->errored_from == State::new_ ? State::new_ : State::installed);
    return ok();
  }
  m.stop_component(*c, State::installed, [this, name] {
    if (auto* cc = impl_->find(name)) {
      ++cc->restart_count;
      if (cc->state == State::finished) impl_->set_state(*cc, State::installed);
      impl_->kick();
    }
  });
  return ok();
}

result<void> Manager::stop(const std::string& name) {
  auto& m = *impl_;
  auto* c = m.find(name);
  if (!c) return make_error(errc::not_found, fmt::format("component {} is not deployed on this device", name));
  c->desired_running = false;
  m.log->info("component={} stop requested", name);
  m.stop_component(*c, State::finished, [] {});
  return ok();
}

result<void> Manager::pause(const std::string& name) {
  auto* c = impl_->find(name);
  if (!c) return make_error(errc::not_found, fmt::format("component {} is not deployed on this device", name));
  if (c->state != State::running || !c->main_pgid)
    return make_error(errc::conflict, fmt::format("component {} is {}, not RUNNING with a process, so it cannot be paused",
                                                  name, to_string(c->state)));
  if (c->paused) return make_error(errc::conflict, fmt::format("component {} is already paused", name));
  Launcher::signal_group(c->main_pgid, SIGSTOP);
  c->paused = true;
  impl_->log->info("component={} paused (SIGSTOP to process group {})", name, c->main_pgid);
  return ok();
}

result<void> Manager::resume(const std::string& name) {
  auto* c = impl_->find(name);
  if (!c) return make_error(errc::not_found, fmt::format("component {} is not deployed on this device", name));
  if (!c->paused) return make_error(errc::conflict, fmt::format("component {} is not paused", name));
  if (c->main_pgid) Launcher::signal_group(c->main_pgid, SIGCONT);
  c->paused = false;
  impl_->log->info("component={} resumed", name);
  return ok();
}

void Manager::report_state(const std::string& name, std::string_view state) {
  auto& m = *impl_;
  auto* c = m.find(name);
  if (!c) return;
  if (state == "RUNNING") {
    if (c->state == State::starting) {
      c->reported = true;
      m.set_state(*c, State::running);
    }
  } else if (state == "ERRORED") {
    if (c->state == State::starting || c->state == State::running) {
      c->reported = true;
      m.errored(*c, "REPORTED_ERROR", "the component reported ERRORED through UpdateState");
    }
  }
}

namespace {
ComponentInfo info_of(const ComponentSpec& spec, State state, const std::string& code, const std::string& reason,
                      pid_t pid, std::uint32_t restarts, std::size_t errors, bool paused, bool desired) {
  ComponentInfo i;
  i.name = spec.name;
  i.version = spec.version;
  i.state = state;
  i.status_code = code;
  i.status_reason = reason;
  i.pid = pid;
  i.restart_count = restarts;
  i.recent_errors = static_cast<std::uint32_t>(errors);
  i.paused = paused;
  i.desired_running = desired;
  for (const auto& d : spec.dependencies) i.dependencies.push_back(d.name);
  return i;
}
}  // namespace

std::vector<ComponentInfo> Manager::list() const {
  std::vector<ComponentInfo> out;
  for (const auto& [name, c] : impl_->components)
    out.push_back(info_of(c->spec, c->state, c->status_code, c->status_reason, c->main_pgid, c->restart_count,
                          c->errors.size(), c->paused, c->desired_running));
  return out;
}

std::optional<ComponentInfo> Manager::get(const std::string& name) const {
  auto it = impl_->components.find(name);
  if (it == impl_->components.end()) return std::nullopt;
  const auto& c = *it->second;
  return info_of(c.spec, c.state, c.status_code, c.status_reason, c.main_pgid, c.restart_count, c.errors.size(),
                 c.paused, c.desired_running);
}

std::optional<State> Manager::state(const std::string& name) const {
  auto it = impl_->components.find(name);
  if (it == impl_->components.end()) return std::nullopt;
  return it->second->state;
}

}  // namespace canopy::lifecycle
