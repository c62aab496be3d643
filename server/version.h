/* version.h - the server's version and build id (the Makefile passes the git revision). */
#ifndef LSQ_SERVER_VERSION_H
#define LSQ_SERVER_VERSION_H

#include "lsq.h"

#define LSQ_SERVER_VERSION LSQ_VERSION
#ifndef LSQ_SERVER_BUILD
#define LSQ_SERVER_BUILD "unknown build"
#endif

#endif
