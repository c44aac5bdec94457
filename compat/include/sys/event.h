/*
 * <sys/event.h> for Linux, from kqlab's kqueue layer.
 *
 * The programming interface of FreeBSD's kqueue(2): the same `struct kevent` (FreeBSD 12+ layout, with ext[4]),
 * the same EV_SET, and FreeBSD's value for every name, so a program written for FreeBSD or macOS compiles here
 * unchanged. Where FreeBSD and macOS give a name different values (EVFILT_USER, NOTE_USECONDS, ...) this header
 * follows FreeBSD; portable programs use the names only. What the layer implements, and where Linux makes it
 * deviate from FreeBSD, is listed in compat/README.md.
 */
#ifndef KQLAB_SYS_EVENT_H
#define KQLAB_SYS_EVENT_H

#include <stdint.h>
#include <time.h>

/* Filters: negative numbers, never bit masks (one kevent per (ident, filter) pair). */
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_AIO (-3)
#define EVFILT_VNODE (-4)
#define EVFILT_PROC (-5)
#define EVFILT_SIGNAL (-6)
#define EVFILT_TIMER (-7)
#define EVFILT_PROCDESC (-8)
#define EVFILT_FS (-9)
#define EVFILT_LIO (-10)
#define EVFILT_USER (-11)
#define EVFILT_SENDFILE (-12)
#define EVFILT_EMPTY (-13)
#define EVFILT_SYSCOUNT 13

/* Actions (input). */
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ENABLE 0x0004
#define EV_DISABLE 0x0008
#define EV_FORCEONESHOT 0x0100
#define EV_KEEPUDATA 0x0200

/* Behaviour chosen when the event is created (kept by later changes). */
#define EV_ONESHOT 0x0010
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_DISPATCH 0x0080

/* Reserved for the system: stripped from every change. */
#define EV_SYSFLAGS 0xF000
#define EV_DROP 0x1000
#define EV_FLAG1 0x2000
#define EV_FLAG2 0x4000

/* Returned. */
#define EV_EOF 0x8000
#define EV_ERROR 0x4000

/* EVFILT_READ / EVFILT_WRITE */
#define NOTE_LOWAT 0x0001
#define NOTE_FILE_POLL 0x0002

/* EVFILT_USER */
#define NOTE_FFNOP 0x00000000
#define NOTE_FFAND 0x40000000
#define NOTE_FFOR 0x80000000
#define NOTE_FFCOPY 0xc0000000
#define NOTE_FFCTRLMASK 0xc0000000
#define NOTE_FFLAGSMASK 0x00ffffff
#define NOTE_TRIGGER 0x01000000

/* EVFILT_VNODE */
#define NOTE_DELETE 0x0001
#define NOTE_WRITE 0x0002
#define NOTE_EXTEND 0x0004
#define NOTE_ATTRIB 0x0008
#define NOTE_LINK 0x0010
#define NOTE_RENAME 0x0020
#define NOTE_REVOKE 0x0040
#define NOTE_OPEN 0x0080
#define NOTE_CLOSE 0x0100
#define NOTE_CLOSE_WRITE 0x0200
#define NOTE_READ 0x0400

/* EVFILT_PROC */
#define NOTE_EXIT 0x80000000
#define NOTE_FORK 0x40000000
#define NOTE_EXEC 0x20000000
#define NOTE_PCTRLMASK 0xf0000000
#define NOTE_PDATAMASK 0x000fffff
#define NOTE_TRACK 0x00000001
#define NOTE_TRACKERR 0x00000002
#define NOTE_CHILD 0x00000004

/* EVFILT_TIMER units (FreeBSD values; macOS numbers USECONDS and NSECONDS differently). */
#define NOTE_SECONDS 0x0001
#define NOTE_MSECONDS 0x0002
#define NOTE_USECONDS 0x0004
#define NOTE_NSECONDS 0x0008
#define NOTE_ABSTIME 0x0010

/* kqueuex() flags (FreeBSD 14+). */
#define KQUEUE_CLOEXEC 0x00000001

struct kevent {
	uintptr_t ident;     /* what is watched: a descriptor, pid, signal number or a number of your choice */
	short filter;        /* EVFILT_* */
	unsigned short flags; /* EV_* actions in, EV_* state out */
	unsigned int fflags; /* filter-specific flags (NOTE_*) */
	int64_t data;        /* filter-specific data */
	void *udata;         /* opaque to the kernel: returned as given */
	uint64_t ext[4];     /* FreeBSD extensions; zero-filled by EV_SET */
};

#define EV_SET(kevp_, a, b, c, d, e, f)                  \
	do {                                             \
		struct kevent *kevp = (kevp_);           \
		(kevp)->ident = (a);                     \
		(kevp)->filter = (short)(b);             \
		(kevp)->flags = (unsigned short)(c);     \
		(kevp)->fflags = (unsigned int)(d);      \
		(kevp)->data = (e);                      \
		(kevp)->udata = (f);                     \
		(kevp)->ext[0] = 0;                      \
		(kevp)->ext[1] = 0;                      \
		(kevp)->ext[2] = 0;                      \
		(kevp)->ext[3] = 0;                      \
	} while (0)

#ifdef __cplusplus
extern "C" {
#endif

/* Creates a new, empty queue and returns its descriptor (close-on-exec is not set, as on FreeBSD). */
int kqueue(void);

/* kqueue() with flags: KQUEUE_CLOEXEC. Unknown flags give EINVAL. */
int kqueuex(unsigned int flags);

/* kqueue() with open(2)'s O_CLOEXEC (FreeBSD 14+, for NetBSD compatibility). Other flags give EINVAL. */
int kqueue1(int flags);

/* Applies `changelist` in order, then, unless a change wrote an error or receipt entry, waits up to `timeout`
 * (NULL: forever; {0,0}: poll) for events and returns how many it wrote into `eventlist` (-1 and errno on error). */
int kevent(int kq, const struct kevent *changelist, int nchanges, struct kevent *eventlist, int nevents,
           const struct timespec *timeout);

#ifdef __cplusplus
}
#endif

#endif /* KQLAB_SYS_EVENT_H */
