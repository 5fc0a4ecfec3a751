/* The shared library's only C translation unit: the code is the Rust
 * archive linked whole around it. Including the header checks that it
 * compiles in the installed build as well; nothing here is exported. */
#include "chinwag.h"

typedef char cw_header_version_check_[sizeof(CW_VERSION_STRING) > 1 ? 1 : -1];
