// queue/delivery/destinations_test.cc — tests of destinations.h. (Contract placeholder.)
#include "queue/delivery/destinations.h"
