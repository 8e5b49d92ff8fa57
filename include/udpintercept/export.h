// SPDX-License-Identifier: LGPL-2.1-or-later
#pragma once

/**
 * Marks a declaration of the public API. The library is built with hidden
 * visibility, so only what carries this is exported from libudpintercept.so;
 * a version script also keeps out the instantiations of standard and fmt
 * templates that would otherwise leak.
 */
#define UDPINTERCEPT_EXPORT __attribute__((visibility("default")))
