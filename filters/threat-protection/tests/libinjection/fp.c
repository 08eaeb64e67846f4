#include <stdio.h>
#include <string.h>
#include "libinjection.h"
#include "libinjection_sqli.h"
int main(void) {
    char line[65536];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        if (n && line[n-1] == '\n') line[--n] = 0;
        char fp[8];
        int sqli = libinjection_sqli(line, n, fp);
        int xss = libinjection_xss(line, n);
        printf("%s\t%d\n", sqli ? fp : "", xss);
    }
    return 0;
}
