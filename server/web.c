/* web.c - embeds server/web/index.html into the binary (.incbin), so the server is one file and
 * the page needs nothing from outside (no CDN). The Makefile makes web.o depend on the page. */
#include "web.h"

__asm__(".section .rodata\n"
        ".global web_index\n"
        ".type web_index, @object\n"
        ".balign 16\n"
        "web_index:\n"
        ".incbin \"server/web/index.html\"\n"
        ".byte 0\n"
        "web_index_end:\n"
        ".global web_index_len\n"
        ".type web_index_len, @object\n"
        ".balign 8\n"
        "web_index_len:\n"
        ".quad web_index_end - web_index - 1\n"
        ".previous\n");
