/*
 * switch_x86_64.S - goroutine context switch for x86_64 (System V ABI).
 *
 * void rt__switch(rt__regs *from, rt__regs *to);
 *
 * Saves what the ABI says a callee must preserve: rbx, rbp, r12-r15, the
 * stack pointer, and the FP control words (MXCSR control bits and the x87
 * control word). Everything else is caller-saved, so the compiler has
 * already spilled it around the call. The saved frame, from the stored
 * stack pointer upwards:
 *
 *     [sp+0]  mxcsr (4 bytes), x87 cw (2 bytes), padding
 *     [sp+8]  r15, r14, r13, r12, rbx, rbp
 *     [sp+56] return address
 *
 * A goroutine that has never run is entered with rt__switch_start.
 */
#if defined(__x86_64__)
/* Push the callee-saved registers and the FP control words, then store
 * the stack pointer into *from (%rdi): the frame described above. */
.macro SAVE_CONTEXT
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        subq    $8, %rsp
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)
.endm

        .text
        .globl  rt__switch
        .type   rt__switch, @function
        .p2align 4
rt__switch:
        .cfi_startproc
        SAVE_CONTEXT
        movq    (%rsi), %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .cfi_endproc
        .size   rt__switch, .-rt__switch

/*
 * void rt__switch_start(rt__regs *from, void *stack_top);
 *
 * Like rt__switch, but the target is a goroutine that has never run: save
 * the current context into *from, move to the (16-byte aligned) top of
 * the new stack and start there. Nothing is read from the new stack, so
 * its first touch happens on the CPU that runs it. The new goroutine
 * inherits this thread's FP control words.
 */
        .globl  rt__switch_start
        .type   rt__switch_start, @function
        .p2align 4
rt__switch_start:
        .cfi_startproc
        SAVE_CONTEXT
        movq    %rsi, %rsp
        jmp     rt__gstart
        .cfi_endproc
        .size   rt__switch_start, .-rt__switch_start

/*
 * First instruction a new goroutine runs. rsp is 16-byte aligned here; the
 * call pushes the return address as the ABI expects at function entry.
 * rt__gmain never returns (it ends in rt_exit).
 */
        .globl  rt__gstart
        .type   rt__gstart, @function
        .p2align 4
rt__gstart:
        .cfi_startproc
        .cfi_undefined rip
        xorl    %ebp, %ebp
        call    rt__gmain
        ud2
        .cfi_endproc
        .size   rt__gstart, .-rt__gstart
#endif
        .section .note.GNU-stack,"",@progbits
