#pragma once

// What the distribution tests and their second node (node_main.cpp) share.

#include <caf/atom.hpp>

namespace tact::test {

/// Asks the published maker for a new protocol actor.
using make_atom = caf::atom_constant<caf::atom("make")>;

} // namespace tact::test
