// queue/delivery/mx_test.cc — tests of mx.h. (Contract placeholder.)
#include "queue/delivery/mx.h"
