// queue/delivery/sources.cc — see sources.h. (Contract placeholder: the implementation lands next.)
#include "queue/delivery/sources.h"
