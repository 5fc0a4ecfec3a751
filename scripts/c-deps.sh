#!/bin/sh
# What the C install needs (cmake, pkg-config) is installed, when missing,
# by the project's one set-up script; this name is kept for the install test.
exec "$(dirname "$0")/install-deps.sh"
