/*
 * switch_aarch64.S - goroutine context switch for AArch64 (AAPCS64).
 *
 * void rt__switch(rt__regs *from, rt__regs *to);
 *
 * Saves the callee-saved registers x19-x28, the frame pointer x29, the
 * link register x30, the low halves d8-d15 of v8-v15, and FPCR, then swaps
 * stack pointers. Frame (176 bytes, 16-byte aligned), from sp upwards:
 *
 *     x19..x30 (96 bytes), d8..d15 (64 bytes), fpcr (8 bytes), pad
 *
 * A goroutine that has never run is entered with rt__switch_start.
 */
#if defined(__aarch64__)
/* Store the callee-saved registers and FPCR in a new frame, then the
 * stack pointer into *from (x0): the frame described above. */
.macro SAVE_CONTEXT
        sub     sp, sp, #176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mrs     x9, fpcr
        str     x9, [sp, #160]
        mov     x9, sp
        str     x9, [x0]
.endm

        .text
        .globl  rt__switch
        .type   rt__switch, %function
        .p2align 4
rt__switch:
        SAVE_CONTEXT
        ldr     x9, [x1]
        mov     sp, x9
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        ldr     x9, [sp, #160]
        msr     fpcr, x9
        add     sp, sp, #176
        ret
        .size   rt__switch, .-rt__switch

/*
 * void rt__switch_start(rt__regs *from, void *stack_top);
 * Save the current context like rt__switch, then start a goroutine that
 * has never run on the 16-byte aligned stack_top (see switch_x86_64.S).
 */
        .globl  rt__switch_start
        .type   rt__switch_start, %function
        .p2align 4
rt__switch_start:
        SAVE_CONTEXT
        mov     sp, x1
        b       rt__gstart
        .size   rt__switch_start, .-rt__switch_start

        .globl  rt__gstart
        .type   rt__gstart, %function
        .p2align 4
rt__gstart:
        mov     x29, #0
        bl      rt__gmain
        brk     #0
        .size   rt__gstart, .-rt__gstart
#endif
        .section .note.GNU-stack,"",%progbits
