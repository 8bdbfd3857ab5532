#ifndef COVERLAYSHIMS_H
#define COVERLAYSHIMS_H
// C shims for what Swift cannot import directly (macros, unions, variadics). Every name here is
// prefixed `ovl_`. Mirrored structs carry _Static_asserts in the .c file.
#include <stdint.h>

#endif
