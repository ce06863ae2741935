// queue/delivery/bounce_class.cc — see bounce_class.h. (Contract placeholder: the implementation lands next.)
#include "queue/delivery/bounce_class.h"
