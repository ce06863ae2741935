// queue/delivery/bounce_class_test.cc — tests of bounce_class.h. (Contract placeholder.)
#include "queue/delivery/bounce_class.h"
