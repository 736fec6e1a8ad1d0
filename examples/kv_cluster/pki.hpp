#pragma once

// The cluster's own CA and its nodes' certificates (see pki.cpp).

#include <optional>
#include <string>
#include <vector>

namespace kv {

/// A node's certificate and key, signed by the cluster's CA; its common
/// name is "kv_cluster NAME" ("shard-0", "gateway", "directory").
struct node_identity {
  std::string name;
  std::string cert_file;
  std::string key_file;
};

/// The files of a cluster's CA: its certificate (`ca_file`; its key is
/// never written) and one identity per node, in `dir` (mode 0700, keys
/// 0600).
struct cluster_pki {
  std::string dir;
  std::string ca_file;
  std::vector<node_identity> nodes;
};

/// Makes a new CA in a fresh directory under $TMPDIR (or /tmp) and a
/// certificate for each of `names`; none (and `error` says why) on failure.
std::optional<cluster_pki> make_cluster_pki(const std::vector<std::string>& names,
                                            std::string& error);

/// Removes the files and the directory.
void remove_cluster_pki(const cluster_pki& pki);

} // namespace kv
