/* A tiny shared object that storm.c dlopens and dlcloses in a loop (built with cc -shared). */
static int loaded;
__attribute__((constructor)) static void storm_lib_init(void) { loaded = 42; }
int storm_lib_answer(int x) { return loaded + x; }
