// queue/delivery/mx.cc — see mx.h. (Contract placeholder: the implementation lands next.)
#include "queue/delivery/mx.h"
