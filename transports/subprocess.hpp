#pragma once

// The options of a child process started by `runtime::subprocess_exec`.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace tact {

/// What a child's stdin, stdout or stderr is connected to.
enum class subprocess_stdio : uint8_t {
  /// A pipe to the parent: a pipe transport (`get_pipe_transport(fd)`).
  pipe,
  /// The parent's own descriptor.
  inherit,
  /// /dev/null.
  devnull,
  /// stderr only: the same as stdout (asyncio's STDOUT).
  stdout_merge,
};

/// asyncio's keyword arguments of `subprocess_exec` / `subprocess_shell`.
struct subprocess_options {
  subprocess_stdio std_in = subprocess_stdio::pipe;
  subprocess_stdio std_out = subprocess_stdio::pipe;
  subprocess_stdio std_err = subprocess_stdio::pipe;
  /// The child's whole environment; empty: the parent's.
  std::optional<std::map<std::string, std::string>> env;
  /// The child's working directory; empty: the parent's.
  std::string cwd;
  /// The child starts a new session (`setsid`), so it leads a process
  /// group of its own and has no controlling terminal (asyncio's
  /// `start_new_session`).
  bool start_new_session = false;
  /// The child joins process group N (`setpgid(0, N)`); 0 makes it the
  /// leader of a new group, in this session (asyncio's `process_group`).
  std::optional<pid_t> process_group;
  /// Descriptors the child keeps, under the same numbers (asyncio's
  /// `pass_fds`); every other descriptor tact opened is close-on-exec.
  std::vector<int> pass_fds;
};

} // namespace tact
