#include "COverlayShims.h"
