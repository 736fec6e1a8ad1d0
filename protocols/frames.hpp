#pragma once
// The framing layer is a transport and lives in transports/ now; this
// header keeps the old include path working.
#include "tact/transports/frames.hpp"
