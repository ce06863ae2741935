// queue/delivery/sources_test.cc — tests of sources.h. (Contract placeholder.)
#include "queue/delivery/sources.h"
