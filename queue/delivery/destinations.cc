// queue/delivery/destinations.cc — see destinations.h. (Contract placeholder: the implementation lands next.)
#include "queue/delivery/destinations.h"
